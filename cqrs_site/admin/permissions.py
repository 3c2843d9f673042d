"""Django's permissions on the MongoDB records, as on models (ModelAdmin.has_*_permission):
mongodb.view_post, mongodb.change_post, mongodb.delete_post, mongodb.view_user. They are
Permission rows on a content type per collection (no table), created after `migrate`
(cqrs_site/admin/apps.py), and granted to staff users and groups in the admin like any other.
A staff user without them sees the records read-only (view) or not at all.
"""

from django.core.exceptions import PermissionDenied

APP_LABEL = "mongodb"


class RecordPermissions:
    """What MongoAdmin (cqrs_site/admin/options.py) asks before each view and action."""

    verbose_name = ""
    verbose_name_plural = ""
    form_class = None
    deletable = False

    def actions(self) -> tuple[str, ...]:
        """The permissions this collection has: mongodb.view_post, change_post, delete_post
        (created by cqrs_site/admin/apps.py, granted in the admin like any model's)."""
        return (
            ("view",) + (("change",) if self.form_class is not None else ()) + (("delete",) if self.deletable else ())
        )

    def permission(self, action: str) -> str:
        return f"{APP_LABEL}.{action}_{self.verbose_name}"

    def permitted(self, request, action: str) -> bool:
        """Whether the user may `action` these records; change implies view, as for models."""
        if action not in self.actions():
            return False
        user = request.user
        if action == "view" and "change" in self.actions() and user.has_perm(self.permission("change")):
            return True
        return user.has_perm(self.permission(action))

    def require(self, request, action: str) -> None:
        if not self.permitted(request, action):
            raise PermissionDenied(f"You may not {action} {self.verbose_name_plural}.")


def permissions_create(admins, using: str = "default") -> None:
    """A content type per collection and a permission per action it has (idempotent)."""
    from django.contrib.auth.models import Permission
    from django.contrib.contenttypes.models import ContentType

    for admin in admins:
        content_type, _ = ContentType.objects.using(using).get_or_create(app_label=APP_LABEL, model=admin.verbose_name)
        for action in admin.actions():
            Permission.objects.using(using).get_or_create(
                content_type=content_type,
                codename=f"{action}_{admin.verbose_name}",
                defaults={"name": f"Can {action} {admin.verbose_name} (MongoDB)"},
            )
