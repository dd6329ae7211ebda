"""The user's API keys: list, create (shown once) and revoke; key administrators act for others."""

from __future__ import annotations

from django import forms
from django.contrib import messages as flash
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods, require_POST

from core import apikeys
from core.audit import Via
from core.models import ApiKey


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, strip=True)


def _key_owner_or_404(request: HttpRequest) -> User:
    """The user whose keys the page shows: the signed-in user, or `?user=<id>` for an admin.
    Anyone else asking for `?user=` gets 404, as if there were nobody by that id."""
    wanted = request.GET.get("user", "")
    if not wanted or wanted == str(request.user.pk):
        return request.user
    owner = User.objects.filter(pk=int(wanted)).first() if wanted.isdigit() else None
    if owner is None or not apikeys.may_manage_keys_of(request.user, owner):
        raise Http404("No such user.")
    return owner


def keys_url(owner: User, actor: User) -> str:
    url = reverse("web:keys")
    return url if owner.pk == actor.pk else f"{url}?user={owner.pk}"


@never_cache  # the response to a creation carries the new key: no cache may keep it
@login_required
@require_http_methods(["GET", "POST"])
def api_keys(request: HttpRequest) -> HttpResponse:
    """The user's API keys (GET); create one (POST): the response shows the new key, once.

    The key goes straight into this response and nowhere else (no redirect, session or flash
    message), so it cannot be seen again after the page is left."""
    owner = _key_owner_or_404(request)
    form = ApiKeyForm()
    new_key = plaintext = None
    if request.method == "POST":
        form = ApiKeyForm(request.POST)
        if form.is_valid():
            try:
                new_key, plaintext = apikeys.create_key(
                    owner,
                    form.cleaned_data["name"],
                    created_by=request.user,
                    via=Via.WEB,
                    request=request,
                )
            except apikeys.TooManyKeys as exc:
                form.add_error("name", str(exc))
            else:
                form = ApiKeyForm()
    context = {
        "owner": owner,
        "for_other_user": owner.pk != request.user.pk,
        "keys": apikeys.keys_for(owner),
        "form": form,
        "new_key": new_key,
        "plaintext": plaintext,
        "keys_url": keys_url(owner, request.user),
        "docs_url": reverse("api-docs"),
        "example_url": request.build_absolute_uri(reverse("api-collections")),
    }
    return render(request, "web/keys.html", context, status=400 if form.errors else 200)


@login_required
@require_POST
def revoke_api_key(request: HttpRequest, pk: int) -> HttpResponse:
    key = get_object_or_404(ApiKey.objects.select_related("user"), pk=pk)
    if not apikeys.may_manage_keys_of(request.user, key.user):
        raise Http404("No such key.")
    if apikeys.revoke_key(key, revoked_by=request.user, via=Via.WEB, request=request):
        flash.success(request, f"Key “{key.name}” ({key.prefix}…) revoked: it no longer works.")
    else:
        flash.info(request, f"Key “{key.name}” was already revoked.")
    return redirect(keys_url(key.user, request.user))
