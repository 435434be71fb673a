"""The form an admin clears a bot's halt with: a reason (checked like a resume's) and an explicit override."""

from __future__ import annotations

from typing import Any

from django import forms

from apps.core.text import RESUME_REASON_MAX, resume_reason_problem


class HaltClearForm(forms.Form):
    reason = forms.CharField(
        label="Why it is safe to clear",
        max_length=RESUME_REASON_MAX,
        error_messages={"required": "Give a reason for clearing the halt."},
    )
    override = forms.BooleanField(
        label="Clear it anyway: I accept that what halted the bot still holds",
        required=False,
    )

    def clean_reason(self) -> str:
        reason: Any = self.cleaned_data["reason"]
        problem = resume_reason_problem(str(reason))
        if problem is not None:
            raise forms.ValidationError(problem)
        return str(reason).strip()

    def error_messages_flat(self) -> list[str]:
        return [str(message) for messages in self.errors.values() for message in messages]
