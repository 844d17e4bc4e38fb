"""HTTP service over the newest valid pushed bundle (FastAPI, run by uvicorn).

  POST /recommend   {"user_id": "42", "k": 10, "candidates": 100,
                     "features": {"user_age": 30, ...}, "timestamp": 893286638,
                     "rated": ["50", "172"], "as_of": 880000000,
                     "order_by": "ranking_score"}       (all but user_id optional; as_of
                                                        backtests from earlier ratings;
                                                        order_by: ranking_score (the
                                                        default when the bundle has a
                                                        sequence scorer, else
                                                        retrieval_score, and the response's
                                                        order_fallback says why),
                                                        retrieval_score or predicted_rating)
  GET  /similar?movie_id=50&k=10
  GET  /healthz     {"status": "ok" | "degraded", "version", "pinned", "reason"}; no token
  GET  /metadata    the bundle version and the artifact ids it serves
  GET  /metrics     Prometheus: requests by path and status, latency, bundle version,
                    reload failures

Safe to expose: with a token (`create_app(token=...)`; `serve` requires one to bind
beyond loopback), every endpoint but /healthz needs `Authorization: Bearer <token>`.
OpenAPI docs are off unless asked for. Malformed requests get 422 (validation) or
400/404/413 with a message; any other failure is a 500 whose body carries only a request
id (the exception goes to the log under that id, with `X-Request-ID` on every response).
"""

import contextlib
import hmac
import logging
import os
import time
import uuid
from typing import Dict, Iterator, List, Optional, Union

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import Headers
import prometheus_client
from prometheus_client import multiprocess
from pydantic import BaseModel, ConfigDict, Field

from serving.exposure import MULTIPROC_DIR_ENV, check_exposure
from serving.recommender import ORDERS, LiveRecommender, UnknownMovieError

log = logging.getLogger("movrec.http")

MAX_BODY_BYTES = 64 * 1024  # a request with 5,000 rated movie ids fits
PUBLIC_PATHS = ("/healthz",)
_ROUTES = ("/recommend", "/similar", "/healthz", "/metadata", "/metrics")


class RecommendRequest(BaseModel):
  model_config = ConfigDict(extra="forbid")
  user_id: str = Field(min_length=1, max_length=64)
  k: int = Field(default=10, ge=1, le=100)
  candidates: int = Field(default=100, ge=1, le=1000)
  features: Optional[Dict[str, Union[int, str]]] = None
  timestamp: Optional[int] = Field(default=None, ge=0)
  rated: Optional[List[str]] = Field(default=None, max_length=5000)
  # Backtesting: answer as of this time (unix seconds), from the user's earlier ratings.
  as_of: Optional[int] = Field(default=None, ge=0)
  # None: the best ordering the bundle has (serving/recommender.py).
  order_by: Optional[str] = Field(default=None, pattern="^(" + "|".join(ORDERS) + ")$")


class ServiceMetrics:
  """The Prometheus series of one app (its own registry, so apps do not share counts).

  With several worker processes (serving.workers, which sets PROMETHEUS_MULTIPROC_DIR
  before they start) each worker writes its series to that directory and `/metrics`, in
  whichever worker answers it, adds up every worker's: request counts and latency are
  summed; the bundle version is the lowest any live worker serves (a worker still on an
  old version shows), and reload failures the most any worker saw."""

  def __init__(self, live: LiveRecommender):
    self.live = live
    self.multiprocess = bool(os.environ.get(MULTIPROC_DIR_ENV))
    self.registry = prometheus_client.CollectorRegistry()
    self.requests = prometheus_client.Counter(
        "movrec_requests", "HTTP requests by route and status", ["path", "status"],
        registry=self.registry)
    self.latency = prometheus_client.Histogram(
        "movrec_request_seconds", "HTTP request latency by route", ["path"],
        buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5), registry=self.registry)
    self.version = prometheus_client.Gauge(
        "movrec_bundle_version", "the bundle version served", registry=self.registry,
        multiprocess_mode="livemin")
    self.failures = prometheus_client.Gauge(
        "movrec_bundle_reload_failures", "bundle versions that failed to load since start",
        registry=self.registry, multiprocess_mode="livemax")
    if self.multiprocess:  # each worker writes its own values as they change
      live.listeners.append(self.update_gauges)
      self.update_gauges()
    else:
      self.version.set_function(lambda: live.current.version)
      self.failures.set_function(lambda: live.reload_failures)

  def update_gauges(self) -> None:
    self.version.set(self.live.current.version)
    self.failures.set(self.live.reload_failures)

  def observe(self, path: str, status: int, seconds: float) -> None:
    route = path if path in _ROUTES else "other"  # bounded label values
    self.requests.labels(route, str(status)).inc()
    self.latency.labels(route).observe(seconds)

  def exposition(self) -> bytes:
    if not self.multiprocess:
      return prometheus_client.generate_latest(self.registry)
    merged = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(merged)
    return prometheus_client.generate_latest(merged)


def create_app(live: LiveRecommender, token: Optional[str] = None, docs: bool = False,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
  app = FastAPI(title="movrec", description="Two-stage MovieLens recommender",
                docs_url="/docs" if docs else None, redoc_url=None,
                openapi_url="/openapi.json" if docs else None)
  metrics = ServiceMetrics(live)
  expected = f"Bearer {token}".encode() if token else None

  app.add_middleware(_Guard, metrics=metrics, expected=expected, max_body_bytes=max_body_bytes)

  @app.exception_handler(Exception)
  async def unexpected(request: Request, exc: Exception):  # pylint: disable=unused-argument
    request_id = getattr(request.state, "request_id", "-")
    log.exception("request %s failed", request_id)
    return JSONResponse(status_code=500, content={"detail": "internal error",
                                                  "request_id": request_id},
                        headers={"X-Request-ID": request_id})

  @app.get("/healthz")
  def healthz():
    return live.health()

  @app.get("/metadata")
  def metadata():
    return live.current.metadata()

  @app.get("/metrics")
  def prometheus_metrics():
    return Response(metrics.exposition(), media_type=prometheus_client.CONTENT_TYPE_LATEST)

  @app.post("/recommend")
  def recommend(request: RecommendRequest):
    if request.k > request.candidates:
      raise HTTPException(400, f"k ({request.k}) must not exceed candidates "
                               f"({request.candidates})")
    recommender = live.current  # one bundle for the whole request, even across a swap
    unknown = sorted(set(request.features or {}) - set(recommender.retriever.query_features))
    if unknown:
      raise HTTPException(400, f"unknown features {unknown}; known: "
                               f"{sorted(recommender.retriever.query_features)}")
    try:
      return recommender.recommend(request.user_id, k=request.k,
                                   candidates=request.candidates, features=request.features,
                                   timestamp=request.timestamp, rated=request.rated,
                                   as_of=request.as_of, order_by=request.order_by)
    except (ValueError, TypeError) as e:
      raise HTTPException(400, str(e)) from e

  @app.get("/similar")
  def similar(movie_id: str = Query(min_length=1, max_length=64),
              k: int = Query(default=10, ge=1, le=100)):
    try:
      return live.current.similar(movie_id, k)
    except UnknownMovieError as e:
      raise HTTPException(404, str(e.args[0])) from e

  return app


def _body_size(content_length: Optional[str]) -> int:
  return int(content_length) if content_length and content_length.isdigit() else 0


class _Guard:
  """Every request: the bearer token, the body size limit, a request id on the response
  (`X-Request-ID`; the app's 500 handler, outside this, sets its own) and the Prometheus
  counts. Plain ASGI: Starlette's `@app.middleware("http")` runs each request through an
  extra task and memory streams (BENCHMARKS.md, "Serving")."""

  def __init__(self, app, metrics: ServiceMetrics, expected: Optional[bytes],
               max_body_bytes: int):
    self.app, self.metrics, self.expected = app, metrics, expected
    self.max_body_bytes = max_body_bytes

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      await self.app(scope, receive, send)
      return
    request_id = uuid.uuid4().hex[:16]
    scope.setdefault("state", {})["request_id"] = request_id
    started, path, status = time.perf_counter(), scope["path"], 500
    headers = Headers(scope=scope)

    async def send_with_id(message):
      nonlocal status
      if message["type"] == "http.response.start":
        status = message["status"]
        message["headers"] = [*message.get("headers", []),
                              (b"x-request-id", request_id.encode())]
      await send(message)

    try:
      if self.expected and path not in PUBLIC_PATHS and not hmac.compare_digest(
          headers.get("authorization", "").encode(), self.expected):
        await JSONResponse(status_code=401, content={"detail": "missing or wrong bearer token"},
                           headers={"WWW-Authenticate": "Bearer"})(scope, receive, send_with_id)
      elif _body_size(headers.get("content-length")) > self.max_body_bytes:
        await self._too_large(scope, receive, send_with_id)
      elif headers.get("content-length") is None and scope["method"] == "POST":
        # No length declared (chunked): the body is read here to be measured, then replayed.
        body = await self._read_body(receive)
        if body is None:
          await self._too_large(scope, receive, send_with_id)
        else:
          await self.app(scope, _replay(body, receive), send_with_id)
      else:
        await self.app(scope, receive, send_with_id)
    finally:
      self.metrics.observe(path, status, time.perf_counter() - started)

  async def _too_large(self, scope, receive, send):
    await JSONResponse(status_code=413, content={
        "detail": f"request body over {self.max_body_bytes} bytes"})(scope, receive, send)

  async def _read_body(self, receive) -> Optional[bytes]:
    """The whole body, or None when it exceeds the limit."""
    body = b""
    while True:
      message = await receive()
      body += message.get("body", b"")
      if len(body) > self.max_body_bytes:
        return None
      if message["type"] != "http.request" or not message.get("more_body"):
        return body


def _replay(body: bytes, receive):
  """A `receive` that hands the app the body already read, then the connection's."""
  pending = [{"type": "http.request", "body": body, "more_body": False}]

  async def replayed():
    return pending.pop() if pending else await receive()
  return replayed


# uvicorn's own logging stays quiet: the service logs its failures itself, by request id.
UVICORN_OPTIONS = {"log_level": "warning", "access_log": False}


@contextlib.contextmanager
def live_app(serving_dir: str, poll_seconds: float = 2.0, token: Optional[str] = None,
             docs: bool = False) -> Iterator[FastAPI]:
  """The app over a started LiveRecommender, stopped on exit (BundleNotFoundError on
  entry when no version is valid). One process's service; workers each enter their own."""
  live = LiveRecommender(serving_dir, poll_seconds=poll_seconds, freeze_heap=True).start()
  try:
    yield create_app(live, token=token, docs=docs)
  finally:
    live.stop()


def serve(serving_dir: str, host: str = "127.0.0.1", port: int = 8080,
          poll_seconds: float = 2.0, token: Optional[str] = None, docs: bool = False) -> None:
  """Serves in this process until interrupted (several processes: serving.workers)."""
  import uvicorn  # pylint: disable=g-import-not-at-top
  check_exposure(host, token)
  with live_app(serving_dir, poll_seconds, token, docs) as app:
    uvicorn.run(app, host=host, port=port, **UVICORN_OPTIONS)
