"""API tokens in the admin: who holds one, since when, its first characters; deleting one revokes
it. A token's key is never shown (only its hash is kept): create_api_token prints a new one."""

from django.contrib import admin

from .tokens import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ("user", "prefix", "created")
    readonly_fields = ("user", "prefix", "created")
    exclude = ("digest",)
    search_fields = ("user__username", "prefix")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
