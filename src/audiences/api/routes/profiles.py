"""``/v1/profiles`` and ``/v1/evaluate``: ingest, read, erase, a profile's audiences, what-if."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from audiences.api.content import RequireJson
from audiences.api.deps import (
    ProfileId,
    ReadCaller,
    RuntimeDep,
    SessionDep,
    SettingsDep,
    WriteCaller,
    get_runtime,
    read_session,
)
from audiences.api.problems import problem_body, request_id_of, responses
from audiences.api.queries import KnownQuery
from audiences.engines.base import Profile as StoredProfile
from audiences.errors import Unprocessable
from audiences.schemas.profiles import (
    BatchResult,
    EvaluateRequest,
    EvaluateResult,
    Profile,
    ProfileAudiences,
    ProfileBatch,
    ProfileWrite,
)
from audiences.services import profiles
from audiences.services.callers import Caller
from audiences.services.runtime import Runtime
from audiences.store.read_cache import AudienceState

router = APIRouter(tags=["profiles"], dependencies=[KnownQuery])


@router.put(
    "/v1/profiles/{profile_id}",
    response_model=Profile,
    dependencies=[RequireJson],
    responses={201: {"model": Profile}, **responses(401, 403, 413, 415, 422, 429)},
)
def upsert_profile(
    profile_id: ProfileId,
    body: ProfileWrite,
    session: SessionDep,
    caller: WriteCaller,
    runtime: RuntimeDep,
) -> Response:
    """Create (201) or merge into a profile; streaming audiences follow before the answer."""
    result = profiles.upsert(
        session, caller=caller, runtime=runtime, records=[(profile_id, body.attributes)]
    )[0]
    if not result.ok:
        raise Unprocessable(
            "the profile contradicts the attribute schema",
            code="profile_invalid",
            errors=list(result.errors),
        )
    stored = result.profile or profiles.get(
        session, caller=caller, runtime=runtime, external_id=profile_id
    )
    return JSONResponse(_profile(stored), status_code=201 if result.created else 200)


@router.post(
    "/v1/profiles/batch",
    response_model=BatchResult,
    dependencies=[RequireJson],
    responses={207: {"model": BatchResult}, **responses(401, 403, 413, 415, 422, 429)},
)
def upsert_profiles(
    body: ProfileBatch,
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    caller: WriteCaller,
    runtime: RuntimeDep,
) -> Response:
    """Upsert up to 10,000 profiles: a result per record; 207 when some were refused."""
    profiles.check_batch_size(len(body.profiles), settings.max_profiles_per_call)
    records = [(record.id, record.attributes) for record in body.profiles]
    results = profiles.upsert(session, caller=caller, runtime=runtime, records=records)
    rendered: list[dict[str, Any]] = []
    for result in results:
        if result.ok:
            rendered.append(
                {
                    "id": result.external_id,
                    "status": 201 if result.created else 200,
                    "created": result.created,
                }
            )
            continue
        problem = Unprocessable(
            "the profile contradicts the attribute schema",
            code="profile_invalid",
            errors=list(result.errors),
        )
        rendered.append(
            {
                "id": result.external_id,
                "status": 422,
                "created": False,
                "problem": problem_body(problem, request_id_of(request)),
            }
        )
    failed = sum(1 for item in rendered if item["status"] == 422)
    body_out = {"results": rendered, "written": len(rendered) - failed, "failed": failed}
    return JSONResponse(body_out, status_code=207 if failed else 200)


@router.get("/v1/profiles/{profile_id}", response_model=Profile, responses=responses(401, 404, 429))
def get_profile(
    profile_id: ProfileId, session: SessionDep, caller: ReadCaller, runtime: RuntimeDep
) -> Response:
    """A stored profile."""
    return JSONResponse(
        _profile(profiles.get(session, caller=caller, runtime=runtime, external_id=profile_id))
    )


@router.delete(
    "/v1/profiles/{profile_id}", status_code=204, responses=responses(401, 403, 404, 429)
)
def delete_profile(
    profile_id: ProfileId, session: SessionDep, caller: WriteCaller, runtime: RuntimeDep
) -> Response:
    """Erase a profile: its data, and its membership in every audience and kept run."""
    profiles.delete(session, caller=caller, runtime=runtime, external_id=profile_id)
    return Response(status_code=204)


@router.get(
    "/v1/profiles/{profile_id}/audiences",
    response_model=ProfileAudiences,
    responses=responses(401, 404, 429),
)
async def get_profile_audiences(
    profile_id: ProfileId,
    request: Request,
    caller: ReadCaller,
) -> Response:
    """Every audience the profile is in, each with when its membership was computed."""
    runtime = get_runtime(request)  # not a dependency: one less level per request
    # Answered on the event loop from the process's caches when it can (see get_membership).
    found = profiles.cached_audiences_of(runtime, caller=caller, external_id=profile_id)
    if found is None:
        found = await run_in_threadpool(_audiences_of, request, caller, runtime, profile_id)
    return _profile_audiences(profile_id, found)


def _profile_audiences(profile_id: str, found: list[AudienceState]) -> Response:
    items = [
        {"id": a.id, "key": a.key, "name": a.name, "computed_at": _iso(a.computed_at)}
        for a in found
    ]
    return JSONResponse({"profile_id": profile_id, "audiences": items})


def _audiences_of(
    request: Request, caller: Caller, runtime: Runtime, profile_id: str
) -> list[AudienceState]:
    with read_session(request) as session:
        return profiles.audiences_of(
            session, caller=caller, runtime=runtime, external_id=profile_id
        )


@router.post(
    "/v1/evaluate",
    response_model=EvaluateResult,
    dependencies=[RequireJson],
    responses=responses(401, 404, 413, 415, 422, 429),
)
def evaluate_profile(
    body: EvaluateRequest, session: SessionDep, caller: ReadCaller, runtime: RuntimeDep
) -> Response:
    """Which audiences a profile (stored or not) would be in now, and why; stores nothing."""
    verdicts = profiles.what_if(
        session,
        caller=caller,
        runtime=runtime,
        external_id=body.profile_id,
        attributes_=body.attributes,
        explain=body.explain,
        events=body.events,
    )
    items = [
        {
            "id": v.audience.id,
            "key": v.audience.key,
            "name": v.audience.name,
            "kind": v.audience.kind,
            "member": v.member,
            "explanation": v.explanation,
        }
        for v in sorted(verdicts, key=lambda v: v.audience.key)
    ]
    return JSONResponse({"profile_id": body.profile_id, "audiences": items})


def _profile(profile: StoredProfile) -> dict[str, Any]:
    return Profile(
        id=profile.external_id, attributes=profile.attributes, updated_at=profile.updated_at
    ).model_dump(mode="json")


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()
