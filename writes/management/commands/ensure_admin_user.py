import os
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = (
        "Make sure a staff superuser exists for the admin. The username and password come from "
        "DJANGO_SUPERUSER_USERNAME (default 'admin') and DJANGO_SUPERUSER_PASSWORD. Without a password, "
        "a new account gets a random one, printed once and written to --password-file; an existing "
        "account keeps its password."
    )

    def add_arguments(self, parser):
        parser.add_argument("--password-file", type=Path, required=True, help="where a generated password is written")

    def handle(self, *args, password_file: Path, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME", "admin").strip()
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD", "")
        if not username:
            raise CommandError("DJANGO_SUPERUSER_USERNAME is empty; set a username or unset it for 'admin'.")
        user, created = get_user_model().objects.get_or_create(username=username)
        user.is_staff = user.is_superuser = user.is_active = True
        if password:
            user.set_password(password)
            source = "DJANGO_SUPERUSER_PASSWORD"
        elif created or not user.has_usable_password():
            password = secrets.token_urlsafe(12)
            user.set_password(password)
            password_file.parent.mkdir(parents=True, exist_ok=True)
            password_file.touch(mode=0o600)
            password_file.write_text(password + "\n")
            source = f"generated, written to {password_file}"
            self.stdout.write(f"admin password for {username!r}: {password}")
        else:
            source = "unchanged"
        user.save()
        self.stdout.write(f"admin user {username!r} ready (password {source})")
