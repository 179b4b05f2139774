"""A WSGI app for gunicorn with a per-request leak (a module-level list of request logs)."""

request_log = []


def app(environ, start_response):
    entry = {"path": environ.get("PATH_INFO"), "query": environ.get("QUERY_STRING", ""), "pad": "." * 300}  # LEAK
    request_log.append(entry)
    body = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
