from __future__ import annotations

import re
from typing import Any

from django import forms
from django.contrib.auth.forms import AuthenticationForm
from django.core.validators import MaxLengthValidator
from django.http import HttpRequest

from apps.accounts.models import User
from apps.accounts.services import ROLES
from apps.core.input_validation import NoControlCharacters, TextField

USERNAME_MAX = 150  # the user table's column
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class LoginForm(AuthenticationForm):
    """The password step. The typed username is checked like any text before authenticate() sees it:
    Django's form only sets the input's maxlength, and django-axes stores whatever authenticate() was
    given in a 255-character column."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["username"].validators += [MaxLengthValidator(USERNAME_MAX), NoControlCharacters()]


def axes_username(request: HttpRequest | None, credentials: dict[str, Any] | None = None) -> str | None:
    """The username django-axes counts failures under (AXES_USERNAME_CALLABLE): as typed, without control
    characters and cut to the column, so that no login form (the Django admin's included) can hand it
    a value the database refuses. No real username changes: they have neither."""
    if credentials:
        raw = credentials.get("username")
    else:
        raw = getattr(request, "data", request.POST).get("username") if request is not None else None
    return None if raw is None else _CONTROL.sub("", str(raw))[:USERNAME_MAX]


class CodeForm(forms.Form):
    code = TextField(
        label="Code",
        max_length=32,
        strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=[(r, r.capitalize()) for r in ROLES])


class UserCreateForm(forms.Form):
    username = forms.RegexField(
        regex=r"^[\w.@+-]{3,150}$",
        max_length=150,
        error_messages={
            "invalid": "Use 3 to 150 letters, digits and @ . + - _ only.",
        },
    )
    email = forms.EmailField(required=False, max_length=254)  # the column's length
    role = forms.ChoiceField(choices=[(r, r.capitalize()) for r in ROLES], initial="viewer")

    def clean_username(self) -> str:
        username: str = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("A user with that username already exists.")
        return username
