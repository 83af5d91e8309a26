"""The public signup form."""
from __future__ import annotations

from django import forms


class SignupForm(forms.Form):
    name = forms.CharField(max_length=200, strip=True)
    email = forms.EmailField(max_length=254)
