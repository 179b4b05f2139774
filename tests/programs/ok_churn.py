"""Not a leak: pure churn. The handler adds more of the same work on top of the service's own
(a page of results rendered and thrown away); nothing is kept."""
from _service import serve


def handle(request):
    rows = [{"id": request.id + k, "name": f"item {k}", "tags": [k % 3, k % 5]} for k in range(50)]
    page = "".join(f"<tr><td>{r['id']}</td><td>{r['name']}</td></tr>" for r in rows)
    return len(page)


serve(handle)
