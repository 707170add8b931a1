"""Staff accounts: the CM and the service heads, with argon2id password hashes."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from bot.models import StaffUser, utcnow
from bot.profile import Profile
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

    @property
    def is_cm(self) -> bool:
        return self.role == "cm"

    def signature(self, profile: Profile) -> str:
        if self.is_cm or not self.service:
            return f"L'équipe {profile.cm_team}"
        return f"Service {profile.service(self.service).name}"


def _as_staff(user: StaffUser) -> Staff:
    return Staff(user.username, user.display_name, user.role, user.service)


class Accounts:
    def __init__(self, store: TicketStore, profile: Profile):
        self.store = store
        self.profile = profile

    def create(self, username: str, password: str, role: str, service: str | None = None,
               display_name: str | None = None) -> Staff:
        username = (username or "").strip().lower()
        if not username or not username.replace(".", "").replace("-", "").replace("_", "").isalnum():
            raise AccountError("Identifiant invalide : lettres, chiffres, « . », « - » ou « _ ».")
        if role not in ROLES:
            raise AccountError(f"Rôle inconnu {role!r} : « cm » ou « head ».")
        if role == "head":
            if service not in self.profile.services:
                raise AccountError(f"Un responsable doit avoir un service parmi : {', '.join(self.profile.services)}.")
        else:
            service = None
        if len(password or "") < 10:
            raise AccountError("Mot de passe trop court : 10 caractères au minimum.")
        user = StaffUser(username=username, display_name=display_name or username, role=role, service=service,
                         password_hash=_hasher.hash(password))
        with self.store.session() as session:
            session.add(user)
            try:
                session.commit()
            except IntegrityError as exc:
                raise AccountError(f"Le compte {username!r} existe déjà.") from exc
            return _as_staff(user)

    def get(self, username: str) -> Staff | None:
        with self.store.session() as session:
            user = session.execute(select(StaffUser).where(StaffUser.username == username.strip().lower(),
                                                           StaffUser.active.is_(True))).scalar_one_or_none()
            return _as_staff(user) if user else None

    def authenticate(self, username: str, password: str, now: dt.datetime | None = None) -> Staff | None:
        """Check a password; too many failures lock the account for a while."""
        moment = now or utcnow()
        with self.store.session() as session:
            user = session.execute(select(StaffUser).where(StaffUser.username == (username or "").strip().lower(),
                                                           StaffUser.active.is_(True))).scalar_one_or_none()
            if user is None:
                _hasher.hash(password or "x")  # same cost whether the account exists or not
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
            session.commit()
            return _as_staff(user)

    def list(self) -> list[Staff]:
        with self.store.session() as session:
            users = session.execute(select(StaffUser).order_by(StaffUser.username)).scalars()
            return [_as_staff(u) for u in users]
