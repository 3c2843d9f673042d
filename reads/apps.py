from django.apps import AppConfig


class ReadsConfig(AppConfig):
    name = "reads"

    def ready(self) -> None:
        from django.core.signals import setting_changed

        from cqrs_site.core.codec import prefix_forget

        from .cache import ttls

        # Settings read once per process are read again when a test overrides them.
        setting_changed.connect(prefix_forget, dispatch_uid="reads.prefix_forget")
        setting_changed.connect(lambda **kwargs: ttls.cache_clear(), dispatch_uid="reads.ttls", weak=False)
