from django.urls import path

from .routes import ROUTES

app_name = "reads"

urlpatterns = [path(route.pattern, route.view, name=route.name) for route in ROUTES]
