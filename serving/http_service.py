"""HTTP service over the newest pushed bundle (FastAPI, run by uvicorn).

  POST /recommend   {"user_id": "42", "k": 10, "candidates": 100,
                     "features": {"user_age": 30, ...}, "timestamp": 893286638,
                     "rated": ["50", "172"], "as_of": 880000000}
                                                        (all but user_id optional; as_of
                                                        backtests from earlier ratings)
  GET  /similar?movie_id=50&k=10
  GET  /healthz     200 when a bundle is loaded
  GET  /metadata    the bundle version and the model / index artifacts it serves

Malformed requests get 422 (validation) or 400/404 with a message; any other failure is a
500 with a message, and the service keeps running. A new push is picked up by the
LiveRecommender's poller without a restart.
"""

import logging
from typing import Dict, List, Optional, Union

from fastapi import FastAPI, HTTPException, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from serving.recommender import LiveRecommender, UnknownMovieError

log = logging.getLogger("movrec.http")


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


def create_app(live: LiveRecommender) -> FastAPI:
  app = FastAPI(title="movrec", description="Two-stage MovieLens recommender")

  @app.exception_handler(Exception)
  async def unexpected(request: Request, exc: Exception):  # pylint: disable=unused-argument
    log.exception("request failed")
    return JSONResponse(status_code=500, content={"detail": f"internal error: {exc}"})

  @app.get("/healthz")
  def healthz():
    return {"status": "ok", "version": live.current.version, "reload_error": live.last_error}

  @app.get("/metadata")
  def metadata():
    return live.current.metadata()

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
                                   as_of=request.as_of)
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


def serve(serving_dir: str, host: str = "127.0.0.1", port: int = 8080,
          poll_seconds: float = 2.0) -> None:
  import uvicorn  # pylint: disable=g-import-not-at-top
  live = LiveRecommender(serving_dir, poll_seconds=poll_seconds).start()
  try:
    uvicorn.run(create_app(live), host=host, port=port, log_level="warning",
                access_log=False)
  finally:
    live.stop()
