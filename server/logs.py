"""Logging setup: JSON or text lines to stderr, plus rotating files when LOG_DIR is set."""

from __future__ import annotations

import logging
import logging.handlers
import time

import orjson

from server.config import Settings

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update({k: v for k, v in vars(record).items() if k not in _STANDARD})
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def configure_logging(settings: Settings) -> None:
    formatter: logging.Formatter = (
        JsonFormatter() if settings.log_format == "json"
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handlers: list[logging.Handler] = [logging.StreamHandler()]
    if settings.log_dir is not None:
        settings.log_dir.mkdir(parents=True, exist_ok=True)
        size, count = 50 * 1024 * 1024, 10
        handlers.append(logging.handlers.RotatingFileHandler(
            settings.log_dir / "app.log", maxBytes=size, backupCount=count))
        errors = logging.handlers.RotatingFileHandler(
            settings.log_dir / "error.log", maxBytes=size, backupCount=count)
        errors.setLevel(logging.ERROR)
        handlers.append(errors)
    root = logging.getLogger()
    root.handlers.clear()
    for handler in handlers:
        handler.setFormatter(formatter)
        root.addHandler(handler)
    root.setLevel(settings.log_level)
    # One line per request is tornado's access log; keep it at WARNING unless debugging.
    logging.getLogger("tornado.access").setLevel(
        logging.INFO if settings.log_level == "DEBUG" else logging.WARNING)
