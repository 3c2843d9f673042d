from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from rest_framework.authtoken.models import Token


class Command(BaseCommand):
    help = (
        "Print an API token for NAME (a Django user made for API access, created if missing). "
        "Send it as 'Authorization: Token <key>' on write requests. --rotate replaces an existing token."
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
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
        self.stdout.write(token.key)
