"""Refuse requests whose declared charset Django can't decode, before anything parses them."""
from __future__ import annotations

import codecs
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest

logger = logging.getLogger("signup_site.requests")

# What browsers and ordinary clients declare. Others, such as "base64", "rot13" or
# "idna", make Django's parsers raise instead of decode, which would be a server error.
DECODABLE_CHARSETS = frozenset({"utf-8", "ascii", "iso8859-1", "cp1252"})


def charset_guard(get_response: Callable[[HttpRequest], HttpResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """Answer 400 to a request whose Content-Type names a charset outside DECODABLE_CHARSETS.

    Goes before CsrfViewMiddleware, the first thing that reads the body.
    """

    def middleware(request: HttpRequest) -> HttpResponse:
        charset = (request.content_params or {}).get("charset")
        if charset is not None:
            try:
                name = codecs.lookup(charset).name
            except LookupError:
                name = None  # Django ignores a charset it doesn't know and uses UTF-8
            if name is not None and name not in DECODABLE_CHARSETS:
                logger.warning("refused a request declaring charset %r", charset, extra={"action": "bad_charset"})
                return HttpResponseBadRequest("Unsupported charset.", content_type="text/plain")
        return get_response(request)

    return middleware
