from django.core.management.base import BaseCommand

from reads.routes import edge_routes_lua


class Command(BaseCommand):
    help = "Print deploy/edge_routes.lua: the entry routes HAProxy's edge answers (from cqrs_site/core/routes.py)."

    def handle(self, *args, **options):
        self.stdout.write(edge_routes_lua(), ending="")
