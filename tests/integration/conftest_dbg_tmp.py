import test_tls_sips as t
orig = t.s_client
def wrapped(*a, **k):
    text, rc = orig(*a, **k)
    print("=====", a[3].cert if a[3] is not None else None, "\n", text[-600:])
    return text, rc
t.s_client = wrapped
