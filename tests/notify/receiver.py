"""Receivers for delivery-hook's notification tests, on 127.0.0.1.

Each writes one JSON line per request it gets to LOG, and answers as a real
receiver would:

  receiver.py webhook PORT LOG KEY [--fail-first N] [--hang]
      Verifies every request with the Standard Webhooks reference library
      (PyPI standardwebhooks) and KEY (whsec_...): 204 when it verifies,
      400 when not. --fail-first N answers 503 to the first N requests
      (each still verified and logged); --hang never answers.
  receiver.py slack PORT LOG
      Checks the shape of a Slack incoming-webhook message: 200 "ok", or
      400 naming what is wrong.
  receiver.py smtp PORT LOG [--starttls CERT KEY | --tls CERT KEY] [--login USER PASSWORD]
      An SMTP server (PyPI aiosmtpd); with --starttls it offers STARTTLS
      and refuses mail sent without it; with --tls it speaks TLS from the
      first byte (implicit TLS, as on port 465); with --login it takes AUTH
      (over TLS) with that user and password only.

It prints "ready" once it listens.
"""

import argparse
import json
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def log_line(path, record):
    with LOCK:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


LOCK = threading.Lock()


def webhook(args):
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError

    verifier = Webhook(args.key)
    seen = {"count": 0}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            headers = {k.lower(): v for k, v in self.headers.items()}
            with LOCK:
                seen["count"] += 1
                number = seen["count"]
            record = {
                "number": number,
                "id": headers.get("webhook-id"),
                "timestamp": headers.get("webhook-timestamp"),
            }
            if args.hang:
                log_line(args.log, dict(record, hung=True))
                time.sleep(3600)
                return
            try:
                payload = verifier.verify(body, headers)
                record.update(verified=True, payload=payload)
            except WebhookVerificationError as e:
                record.update(verified=False, error=str(e))
            status = 204 if record["verified"] else 400
            if record["verified"] and number <= args.fail_first:
                status = 503
            record["status"] = status
            log_line(args.log, record)
            self.send_response(status)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_):
            pass

    serve(args.port, Handler)


def slack_problems(message):
    problems = []
    if not isinstance(message.get("text"), str) or not message["text"]:
        problems.append("`text` must be a non-empty string")
    blocks = message.get("blocks")
    if not isinstance(blocks, list) or not blocks:
        problems.append("`blocks` must be a non-empty list")
        return problems
    for block in blocks:
        if block.get("type") != "section":
            problems.append(f"unexpected block type {block.get('type')!r}")
            continue
        texts = [block["text"]] if "text" in block else []
        fields = block.get("fields", [])
        if len(fields) > 10:
            problems.append("a section has more than 10 fields")
        texts += fields
        if not texts:
            problems.append("a section has neither text nor fields")
        for text in texts:
            if text.get("type") not in ("mrkdwn", "plain_text"):
                problems.append(f"a text object has type {text.get('type')!r}")
            if not isinstance(text.get("text"), str) or len(text["text"]) > 3000:
                problems.append("a text object's text is missing or over 3000 characters")
    return problems


def slack(args):
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            try:
                message = json.loads(body)
                problems = slack_problems(message)
            except ValueError as e:
                message, problems = None, [f"not JSON: {e}"]
            log_line(args.log, {"message": message, "problems": problems})
            answer = b"ok" if not problems else "; ".join(problems).encode()
            self.send_response(200 if not problems else 400)
            self.send_header("content-length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *_):
            pass

    serve(args.port, Handler)


def serve(port, handler):
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    print("ready", flush=True)
    server.serve_forever()


def smtp(args):
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            log_line(
                args.log,
                {
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "tls": server.transport.get_extra_info("ssl_object") is not None,
                    "login": session.authenticated,
                    "content": envelope.content.decode("utf-8", "replace"),
                },
            )
            return "250 OK"

    def authenticate(server, session, envelope, mechanism, auth_data):
        user, password = (args.login[0].encode(), args.login[1].encode())
        return AuthResult(success=(auth_data.login, auth_data.password) == (user, password))

    options = {}
    for pair in (args.starttls, args.tls):
        if pair:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(pair[0], pair[1])
    if args.starttls:
        options = {"tls_context": context, "require_starttls": True}
    if args.tls:
        # Implicit TLS: the connection is TLS from its first byte, so a
        # login needs no STARTTLS before it.
        options = {"ssl_context": context, "auth_require_tls": False}
    if args.login:
        options.update(authenticator=authenticate, auth_required=True)
    controller = Controller(Handler(), hostname="127.0.0.1", port=args.port, **options)
    controller.start()
    print("ready", flush=True)
    try:
        threading.Event().wait()
    finally:
        controller.stop()


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="kind", required=True)
    w = sub.add_parser("webhook")
    w.add_argument("port", type=int)
    w.add_argument("log")
    w.add_argument("key")
    w.add_argument("--fail-first", type=int, default=0)
    w.add_argument("--hang", action="store_true")
    s = sub.add_parser("slack")
    s.add_argument("port", type=int)
    s.add_argument("log")
    m = sub.add_parser("smtp")
    m.add_argument("port", type=int)
    m.add_argument("log")
    tls = m.add_mutually_exclusive_group()
    tls.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    tls.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    m.add_argument("--login", nargs=2, metavar=("USER", "PASSWORD"))
    args = parser.parse_args()
    {"webhook": webhook, "slack": slack, "smtp": smtp}[args.kind](args)


if __name__ == "__main__":
    sys.exit(main())
