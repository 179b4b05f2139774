"""Not a leak: logging with a fixed set of logger names (one per module/route), records
formatted by a handler and dropped."""
import logging

from _service import serve


class DropHandler(logging.Handler):
    def emit(self, record):
        self.format(record)


logging.getLogger("shop").addHandler(DropHandler())
logging.getLogger("shop").setLevel(logging.INFO)


def handle(request):
    log = logging.getLogger(f"shop.{request.path.strip('/').split('/')[0] or 'root'}")
    log.info("%s %s by %s", request.method, request.path, request.user)


serve(handle)
