from django.apps import AppConfig


class SupervisorAppConfig(AppConfig):
    name = "tests.supervisorapp"
    label = "supervisorapp"
