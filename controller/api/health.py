"""Route: /healthz (no auth)"""

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy import text

from controller.api.deps import DbDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str = Field(description="ok, or error when the database does not answer",
                        examples=["ok"])
    database: str = Field(description="ok or the error", examples=["ok"])


@router.get("/healthz", response_model=Health, summary="Liveness and database check (no auth)",
            responses={503: {"model": Health}})
def healthz(db: DbDep):
    try:
        with db.read() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return JSONResponse(status_code=503,
                            content={"status": "error", "database": type(exc).__name__})
    return Health(status="ok", database="ok")
