"""The project's views: what Django answers itself, beside FitFlix's endpoints.

GET /hello/ answers with the pid; GET /leak/?mb=N keeps N MiB (touched, so resident) for the
life of the worker; GET /spike/?mb=N allocates N MiB at once and drops it (past the data limit:
a MemoryError, which Django turns into its own 500 page); GET /form/ sets Django's CSRF cookie;
GET /go/ redirects to /hello/; POST /form/ without the token is Django's 403; GET /oom/ raises
MemoryError at once (what a failed allocation raises, without allocating: for tests in one process);
GET /health/db/ is the project's own health check, under /health/ as many a Django project has one.
"""

from __future__ import annotations

import os

from django.http import HttpResponse, JsonResponse
from django.middleware.csrf import get_token
from django.shortcuts import redirect
from django.urls import path

MIB = 1024 * 1024
_kept: list[bytearray] = []


def _number(request, name: str, default: int) -> int:
    try:
        return int(request.GET.get(name, default))
    except ValueError:
        return default


def _touched(megabytes: int) -> bytearray:
    block = bytearray(megabytes * MIB)
    block[::4096] = b"x" * (len(block) // 4096)  # one write per page: resident, not just reserved
    return block


def hello(request):
    return JsonResponse({"pid": os.getpid(), "framework": "django"})


def leak(request):
    _kept.append(_touched(_number(request, "mb", 2)))
    return JsonResponse({"pid": os.getpid(), "kept_mb": sum(len(block) for block in _kept) // MIB})


def spike(request):
    block = _touched(_number(request, "mb", 700))
    del block
    return JsonResponse({"pid": os.getpid()})


def form(request):
    if request.method == "POST":
        return JsonResponse({"posted": True})
    return HttpResponse(f"<form method=post><input name=csrfmiddlewaretoken value={get_token(request)}></form>")


def out_of_memory(request):
    raise MemoryError


def own_health(request):
    return JsonResponse({"database": "ok", "framework": "django"})


def go(request):
    return redirect("/hello/")


urlpatterns = [
    path("hello/", hello),
    path("leak/", leak),
    path("spike/", spike),
    path("form/", form),
    path("go/", go),
    path("oom/", out_of_memory),
    path("health/db/", own_health),
]
