from django.core.management.base import BaseCommand, CommandError

from writes.tokens import ApiToken


class Command(BaseCommand):
    help = "Revoke NAME's API token: requests sending it answer 401 from then on."

    def add_arguments(self, parser):
        parser.add_argument("name", help="the API client's name (as given to create_api_token)")

    def handle(self, *args, name, **options):
        deleted, _ = ApiToken.objects.filter(user__username=name).delete()
        if not deleted:
            raise CommandError(f"{name!r} has no API token")
        self.stdout.write(f"revoked the API token of {name!r}")
