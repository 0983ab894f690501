"""Views of {{ project }}."""

from django.conf import settings
from django.http import HttpResponse, JsonResponse


def index(request):
    """A short text naming the project, its version and profile."""
    text = "{{ project }} %s (profile %s)\n" % (settings.VERSION, settings.PROFILE)
    return HttpResponse(text, content_type="text/plain; charset=utf-8")


def health(request):
    return JsonResponse({"status": "ok", "version": settings.VERSION})
