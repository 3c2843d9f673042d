from django.core.management.base import BaseCommand

from writes.tokens import ApiToken


class Command(BaseCommand):
    help = "List the API tokens: the client's name, when the token was issued, and its first 8 characters."

    def handle(self, *args, **options):
        tokens = ApiToken.objects.select_related("user").order_by("user__username")
        for token in tokens:
            self.stdout.write(f"{token.user.username}\t{token.created:%Y-%m-%d %H:%M:%S}Z\t{token.prefix}…")
        if not tokens:
            self.stdout.write("no API tokens")
