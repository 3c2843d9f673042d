from django.apps import AppConfig


class ReadsConfig(AppConfig):
    name = "reads"
