"""Scheduled export jobs (admins): create, list, pause, resume, delete, and each job's runs."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, status

from api.deps import Admin, Conn
from api.problems import not_found
from api.schemas import Created, ExportJob, ExportJobCreated, ExportJobIn, ExportRun
from exports import jobs
from wattline import progress, queries
from wattline.principal import Principal

router = APIRouter(prefix="/v1", tags=["exports"])


def _job(conn: Conn, p: Principal, job_id: int) -> dict[str, Any]:
    found = jobs.job(conn, p, job_id)
    if found is None:
        raise not_found("export job")
    return found


@router.post("/customers/{customer_id}/export-jobs", response_model=ExportJobCreated,
             status_code=status.HTTP_201_CREATED,
             summary="Schedule an export: sites or nodes, resolution, CSV or JSON, daily, weekly or monthly, "
                     "to HTTPS or SFTP")
def create(customer_id: int, body: ExportJobIn, request: Request, p: Admin, conn: Conn) -> dict[str, Any]:
    if queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    spec = jobs.JobSpec(body.name, body.resolution, body.format, body.schedule, body.destination,
                        tuple(body.site_ids), tuple(body.node_ids), body.include_catalog, body.url, body.sftp_host,
                        body.sftp_port, body.sftp_username, body.sftp_path, body.sftp_host_key,
                        include_emissions=body.include_emissions)
    made = jobs.create_job(conn, p, customer_id, spec,
                           allow_private=request.app.state.settings.allow_private_destinations)
    return {"id": made.id, "secret": made.secret, "public_key": made.public_key}


@router.get("/customers/{customer_id}/export-jobs", response_model=list[ExportJob], summary="A customer's export jobs")
def list_jobs(customer_id: int, p: Admin, conn: Conn) -> list[dict[str, Any]]:
    if queries.customer(conn, p, customer_id) is None:
        raise not_found("customer")
    return jobs.jobs(conn, p, customer_id)


@router.get("/export-jobs/{job_id}", response_model=ExportJob,
            summary="One export job, with its progress: runs delivered of those planned")
def get_job(job_id: int, p: Admin, conn: Conn) -> dict[str, Any]:
    return {**_job(conn, p, job_id), "progress": progress.export_job(conn, job_id).as_dict()}


@router.get("/export-jobs/{job_id}/runs", response_model=list[ExportRun],
            summary="A job's history: each period's run, its rows, bytes, status and error")
def list_runs(job_id: int, p: Admin, conn: Conn) -> list[dict[str, Any]]:
    _job(conn, p, job_id)
    return jobs.runs(conn, job_id)


@router.post("/export-jobs/{job_id}/pause", response_model=Created, summary="Pause a job")
def pause(job_id: int, p: Admin, conn: Conn) -> Created:
    _job(conn, p, job_id)
    jobs.set_enabled(conn, p, job_id, False)
    return Created(id=job_id)


@router.post("/export-jobs/{job_id}/resume", response_model=Created,
             summary="Resume a job; it catches up on the periods it missed")
def resume(job_id: int, p: Admin, conn: Conn) -> Created:
    _job(conn, p, job_id)
    jobs.set_enabled(conn, p, job_id, True)
    return Created(id=job_id)


@router.delete("/export-jobs/{job_id}", response_model=Created, summary="Delete a job and its history")
def delete(job_id: int, p: Admin, conn: Conn) -> Created:
    _job(conn, p, job_id)
    jobs.delete_job(conn, p, job_id)
    return Created(id=job_id)
