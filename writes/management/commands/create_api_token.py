from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from writes.tokens import ApiToken, api_token_create


class Command(BaseCommand):
    help = (
        "Print a new API token for NAME (a Django user made for API access, created if missing), once: "
        "only its hash is kept. Send it as 'Authorization: Token <key>' on write requests. --rotate "
        "replaces an existing token."
    )

    def add_arguments(self, parser):
        parser.add_argument("name", help="the API client's name (a Django username)")
        parser.add_argument("--rotate", action="store_true", help="revoke the current token and issue a new one")

    def handle(self, *args, name, rotate, **options):
        user, created = get_user_model().objects.get_or_create(username=name)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        if rotate:
            ApiToken.objects.filter(user=user).delete()
        elif ApiToken.objects.filter(user=user).exists():
            raise CommandError(
                f"{name!r} has an API token already; only its hash is kept, so it cannot be shown again. "
                "--rotate replaces it."
            )
        self.stdout.write(api_token_create(user=user))
