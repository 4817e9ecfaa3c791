from django.urls import path

from notes import views

urlpatterns = [
    path("", views.index),
    path("ready", views.ready),
    path("notes", views.notes),
    path("env", views.env),
]
