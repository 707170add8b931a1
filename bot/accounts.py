"""Staff accounts: the CM and the service heads, with argon2id password hashes."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from bot.models import StaffUser, utcnow
from bot.profile import Profile
from bot.textnorm import clean_citizen_text
from bot.tickets import TicketStore

ROLES = ("cm", "head")
MAX_FAILED_LOGINS = 5
LOCK_DURATION = dt.timedelta(minutes=15)
_hasher = PasswordHasher()  # argon2id, memory-hard


class AccountError(ValueError):
    """A clear, French explanation of why an account operation was refused."""


@dataclass(frozen=True)
class Staff:
    """Who is acting: what the permission checks look at."""

    username: str
    display_name: str
    role: str
    service: str | None = None
    session_epoch: int = 0  # a web session is valid only while it matches (logout, password change bump it)

    @property
    def is_cm(self) -> bool:
        return self.role == "cm"

    def signature(self, profile: Profile) -> str:
        if self.is_cm or not self.service:
            return f"L'équipe {profile.cm_team}"
        return f"Service {profile.service(self.service).name}"


def _as_staff(user: StaffUser) -> Staff:
    return Staff(user.username, user.display_name, user.role, user.service, user.session_epoch or 0)


def _valid_username(username: str | None) -> str | None:
    """The normalised username, or None when it cannot be one (never sent to the database)."""
    username = (username or "").strip().lower()
    if not username or len(username) > 64:
        return None
    if not username.replace(".", "").replace("-", "").replace("_", "").isalnum() or not username.isascii():
        return None
    return username


def _check_password(password: str | None) -> None:
    if len(password or "") < 10:
        raise AccountError("Mot de passe trop court : 10 caractères au minimum.")
    if len(password) > 1024:
        raise AccountError("Mot de passe trop long : 1 024 caractères au maximum.")
    if "\x00" in password or any(0xD800 <= ord(ch) <= 0xDFFF for ch in password):
        raise AccountError("Mot de passe invalide : caractère nul ou codage incorrect.")


class Accounts:
    def __init__(self, store: TicketStore, profile: Profile):
        self.store = store
        self.profile = profile

    def create(self, username: str, password: str, role: str, service: str | None = None,
               display_name: str | None = None) -> Staff:
        username = _valid_username(username)
        if username is None:
            raise AccountError("Identifiant invalide : 64 lettres ou chiffres au plus, « . », « - » ou « _ ».")
        if role not in ROLES:
            raise AccountError(f"Rôle inconnu {role!r} : « cm » ou « head ».")
        if role == "head":
            if service not in self.profile.services:
                raise AccountError(f"Un responsable doit avoir un service parmi : {', '.join(self.profile.services)}.")
        else:
            service = None
        _check_password(password)
        display_name = clean_citizen_text(display_name, limit=200) or username
        user = StaffUser(username=username, display_name=display_name, role=role, service=service,
                         password_hash=_hasher.hash(password))
        with self.store.session() as session:
            session.add(user)
            try:
                session.commit()
            except IntegrityError as exc:
                raise AccountError(f"Le compte {username!r} existe déjà.") from exc
            return _as_staff(user)

    def get(self, username: str) -> Staff | None:
        username = _valid_username(username)
        if username is None:
            return None
        with self.store.session() as session:
            user = session.execute(select(StaffUser).where(StaffUser.username == username,
                                                           StaffUser.active.is_(True))).scalar_one_or_none()
            return _as_staff(user) if user else None

    def end_sessions(self, username: str) -> None:
        """Invalidate every web session of this account (logout: the cookie is refused if replayed)."""
        with self.store.session() as session:
            session.execute(update(StaffUser).where(StaffUser.username == _valid_username(username))
                            .values(session_epoch=StaffUser.session_epoch + 1))
            session.commit()

    def set_password(self, username: str, password: str) -> None:
        """Change a password; every open session of the account ends."""
        _check_password(password)
        with self.store.session() as session:
            user = session.execute(select(StaffUser).where(StaffUser.username == _valid_username(username))
                                   ).scalar_one_or_none()
            if user is None:
                raise AccountError(f"Compte inconnu : {username!r}.")
            user.password_hash = _hasher.hash(password)
            user.session_epoch = (user.session_epoch or 0) + 1
            user.failed_logins = 0
            user.locked_until = None
            session.commit()

    def authenticate(self, username: str, password: str, now: dt.datetime | None = None) -> Staff | None:
        """Check a password; too many failures lock the account for a while."""
        moment = now or utcnow()
        valid = _valid_username(username)
        if valid is None or not password or "\x00" in password or len(password) > 1024:
            _hasher.hash("x")  # same cost whatever was sent
            return None
        password = password.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
        with self.store.session() as session:
            user = session.execute(select(StaffUser).where(StaffUser.username == valid,
                                                           StaffUser.active.is_(True))).scalar_one_or_none()
            if user is None:
                _hasher.hash(password)  # same cost whether the account exists or not
                return None
            if user.locked_until and user.locked_until > moment:
                return None
            try:
                _hasher.verify(user.password_hash, password or "")
            except (VerifyMismatchError, InvalidHashError):
                user.failed_logins += 1
                if user.failed_logins >= MAX_FAILED_LOGINS:
                    user.locked_until = moment + LOCK_DURATION
                    user.failed_logins = 0
                session.commit()
                return None
            user.failed_logins = 0
            user.locked_until = None
            user.last_login_at = moment
            if _hasher.check_needs_rehash(user.password_hash):  # parameters raised since: upgrade the hash
                user.password_hash = _hasher.hash(password)
            session.commit()
            return _as_staff(user)

    def list(self) -> list[Staff]:
        with self.store.session() as session:
            users = session.execute(select(StaffUser).order_by(StaffUser.username)).scalars()
            return [_as_staff(u) for u in users]
