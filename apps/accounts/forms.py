from __future__ import annotations

from django import forms

from apps.accounts.models import User
from apps.accounts.services import ROLES


class CodeForm(forms.Form):
    code = forms.CharField(
        label="Code", max_length=32, strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "autofocus": True}),
    )  # fmt: skip


class RoleForm(forms.Form):
    role = forms.ChoiceField(choices=[(r, r.capitalize()) for r in ROLES])


class UserCreateForm(forms.Form):
    username = forms.RegexField(regex=r"^[\w.@+-]{3,150}$", max_length=150, error_messages={
        "invalid": "Use 3 to 150 letters, digits and @ . + - _ only.",
    })  # fmt: skip
    email = forms.EmailField(required=False)
    role = forms.ChoiceField(choices=[(r, r.capitalize()) for r in ROLES], initial="viewer")

    def clean_username(self) -> str:
        username: str = self.cleaned_data["username"]
        if User.objects.filter(username__iexact=username).exists():
            raise forms.ValidationError("A user with that username already exists.")
        return username
