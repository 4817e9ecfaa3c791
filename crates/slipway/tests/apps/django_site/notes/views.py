import os
from pathlib import Path

from django.http import HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from .models import Note


def text(body, status=200):
    return HttpResponse(body, status=status, content_type="text/plain; charset=utf-8")


@require_GET
def index(request):
    # Read on every request, from the working directory (the code snapshot), so that a
    # code edit shows up in the answer of the release that carries it.
    version = Path("version.txt").read_text().strip()
    return text(f"{version} {Note.objects.count()}")


@require_GET
def ready(request):
    # Fails (500) until the release command has run the migrations: the query needs the table.
    Note.objects.count()
    return text("ok")


@csrf_exempt
@require_POST
def notes(request):
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        body = request.POST.get("text", "")
    else:
        body = request.body.decode("utf-8", errors="replace")
    Note.objects.create(text=body)
    return text(str(Note.objects.count()), status=201)


@require_GET
def env(request):
    # Says whether a variable is set, never its value: secrets must not leak into answers.
    name = request.GET.get("name")
    if not name:
        return HttpResponseBadRequest("missing ?name=", content_type="text/plain")
    return text("set" if name in os.environ else "unset")
