"""heaptrail's settings for a traced process, read from HEAPTRAIL_* environment variables
(how `heaptrail run` configures the processes it starts)."""

import os
from dataclasses import dataclass, fields

PREFIX = "HEAPTRAIL_"


@dataclass(frozen=True)
class Settings:
    nframe: int = 10          # HEAPTRAIL_NFRAME: frames kept per traceback
    warmup: float = 2.0       # HEAPTRAIL_WARMUP: seconds before the baseline snapshot
    top: int = 5              # HEAPTRAIL_TOP: growing lines shown in the report
    report: str = ""          # HEAPTRAIL_REPORT: write the report here instead of stderr

    def to_environment(self):
        return {PREFIX + f.name.upper(): str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_environment(cls, environ=os.environ):
        values = {}
        for f in fields(cls):
            raw = environ.get(PREFIX + f.name.upper())
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = type(f.default)(raw)
            except ValueError:
                raise ValueError(f"{PREFIX}{f.name.upper()}={raw!r} is not a valid "
                                 f"{type(f.default).__name__}") from None
        settings = cls(**values)
        settings.check()
        return settings

    def check(self):
        if not 1 <= self.nframe <= 65535:
            raise ValueError(f"nframe must be in 1..65535, not {self.nframe}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0 seconds, not {self.warmup}")
        if self.top < 1:
            raise ValueError(f"top must be >= 1, not {self.top}")
