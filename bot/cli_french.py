"""French for the command line's own texts ("Show this message and exit.", "Missing argument"...).

Typer (0.28) draws its help with its own copy of click (``typer._click``), whose texts are plain
English strings, and its panels with texts passed through gettext, for which no French catalog
ships. This module is that catalog: the gettext names are bound to it, the help option, the
usage line and the error messages of ``typer._click`` are translated, so that ``guichet --help``
and its errors are French from the first line to the last.
"""
from __future__ import annotations

# Texts Typer passes through gettext (its panels and some messages), no French catalog shipping.
SINGULAR = {
    "Options": "Options",
    "Commands": "Commandes",
    "Arguments": "Arguments",
    "Error": "Erreur",
    "Try [blue]'{command_path} {help_option}'[/] for help.": "Aide : [blue]'{command_path} {help_option}'[/].",
    "Missing command.": "Commande manquante.",
    "No such command {name!r}.": "Commande inconnue : {name!r}.",
    "Aborted!": "Abandon.",
    "Aborted.": "Abandon.",
    "[default: {}]": "[défaut : {}]",
    "[env var: {}]": "[variable d'environnement : {}]",
    "[required]": "[obligatoire]",
    "(deprecated) ": "(obsolète) ",
    "(dynamic)": "(dynamique)",
    "default: {default}": "défaut : {default}",
    "env var: {var}": "variable d'environnement : {var}",
    "required": "obligatoire",
}


def french(message: str) -> str:
    return SINGULAR.get(message, message)


# Error messages of typer._click, translated phrase by phrase (they are built with f-strings).
ERROR_PHRASES = (
    ("Missing argument", "Argument manquant"),
    ("Missing option", "Option manquante"),
    ("Missing parameter", "Paramètre manquant"),
    ("Invalid value for", "Valeur refusée pour"),
    ("Invalid value:", "Valeur refusée :"),
    ("No such option:", "Option inconnue :"),
    ("No such command", "Commande inconnue"),
    ("Got unexpected extra argument(s)", "Argument(s) en trop"),
    ("is not a valid int range.", "n'est pas un nombre entier valide."),
    ("is not a valid integer.", "n'est pas un nombre entier valide."),
    ("is not a valid float range.", "n'est pas un nombre valide."),
    ("is not a valid float.", "n'est pas un nombre valide."),
    ("is not a valid boolean.", "n'est pas oui/non (true/false)."),
    ("is not in the range", "n'est pas dans l'intervalle"),
    ("is not one of", "n'est pas parmi"),
    ("requires an argument.", "demande une valeur."),
    ("does not take a value.", "ne prend pas de valeur."),
    ("does not exist.", "est introuvable."),
    ("Did you mean", "Vouliez-vous dire"),
    ("(Possible options:", "(options possibles :"),
    ("Could not open file", "Impossible d'ouvrir le fichier"),
)
HELP_OPTION = "Afficher cette aide et quitter."
USAGE_PREFIX = "Utilisation : "


def translate_error(message: str) -> str:
    for english, french in ERROR_PHRASES:
        message = message.replace(english, french)
    return message


def _install_typer_click() -> None:
    import functools

    from typer._click import decorators, exceptions, formatting

    if getattr(decorators.help_option, "_french", False):
        return
    original_help_option = decorators.help_option

    @functools.wraps(original_help_option)
    def help_option(*args, **kwargs):
        decorate = original_help_option(*args, **kwargs)

        def french(function):
            command = decorate(function)
            option = (command.params[-1] if hasattr(command, "params") and command.params
                      else getattr(command, "__click_params__", [None])[-1])
            if option is not None and getattr(option, "help", None) == "Show this message and exit.":
                option.help = HELP_OPTION
            return command
        return french
    help_option._french = True
    decorators.help_option = help_option

    original_usage = formatting.HelpFormatter.write_usage

    def write_usage(self, prog, args="", prefix=None):
        return original_usage(self, prog, args, USAGE_PREFIX if prefix is None else prefix)
    formatting.HelpFormatter.write_usage = write_usage

    for cls in {obj for obj in vars(exceptions).values()
                if isinstance(obj, type) and issubclass(obj, exceptions.ClickException)} | {exceptions.ClickException.__mro__[1]}:
        if "format_message" in vars(cls):
            def format_message(self, _original=vars(cls)["format_message"]):
                return translate_error(_original(self))
            cls.format_message = format_message


def install() -> None:
    """Bind the French texts into Typer's modules (the constants computed at import included)."""
    import typer.core
    import typer.rich_utils

    typer.core._ = french
    typer.rich_utils._ = french
    utils = typer.rich_utils
    for name, text in (("DEPRECATED_STRING", "(deprecated) "), ("DEFAULT_STRING", "[default: {}]"),
                       ("ENVVAR_STRING", "[env var: {}]"), ("REQUIRED_LONG_STRING", "[required]"),
                       ("ARGUMENTS_PANEL_TITLE", "Arguments"), ("OPTIONS_PANEL_TITLE", "Options"),
                       ("COMMANDS_PANEL_TITLE", "Commands"), ("ERRORS_PANEL_TITLE", "Error"),
                       ("ABORTED_TEXT", "Aborted."), ("RICH_HELP", "Try [blue]'{command_path} {help_option}'[/] for help.")):
        setattr(utils, name, french(text))
    _install_typer_click()
