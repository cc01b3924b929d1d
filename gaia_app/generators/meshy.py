"""3D models (GLB) from Meshy's Text to 3D API (v2): a preview task makes the mesh, a refine
task textures it.

`POST /openapi/v2/text-to-3d` with `mode: "preview"` (then `mode: "refine"` and the
`preview_task_id`) answers `{"result": task_id}`; `GET /openapi/v2/text-to-3d/{id}` gives the
task: `status` PENDING, IN_PROGRESS (with `progress` 0..100), then SUCCEEDED, FAILED (with
`task_error.message`) or CANCELED; a refined task lists `model_urls.glb`, a signed URL that
expires, so the file is copied at once. Errors are `{"message": ...}`.
Reference: https://docs.meshy.ai/api/text-to-3d
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from gaia_app.generators.base import (
    GeneratedFile,
    GenerationRequest,
    GeneratorKind,
    OptionError,
    Progress,
)
from gaia_app.generators.checks import check_file
from gaia_app.generators.remote import (
    ErrorDetail,
    RemoteGenerator,
    compose_prompt,
    pick_choice,
    pick_flag,
    pick_number,
    refuse_unknown,
)

MESHY_DEFAULT_BASE_URL = "https://api.meshy.ai"
TASKS_PATH = "/openapi/v2/text-to-3d"
PROMPT_LIMIT = 600
AI_MODELS = ("latest", "meshy-6", "meshy-5")
ART_STYLES = ("realistic", "sculpture")  # legacy models only: meshy-6 ignores or refuses it
TOPOLOGIES = ("quad", "triangle")
POLYCOUNT_RANGE = (100, 300_000)
RUNNING = frozenset({"PENDING", "IN_PROGRESS"})
FINISHED = frozenset({"SUCCEEDED", "FAILED", "CANCELED"})
# The job's progress: the preview takes it to 50, the refine to 95, the download to 100.
PREVIEW_SPAN = (0, 50)
REFINE_SPAN = (50, 95)

# Credits per task from Meshy's API pricing (https://www.meshy.ai/api: preview 20 on Meshy 6,
# 10 on older models; refine 10), at $0.02 a credit (the Pro plan's $20 for 1,000 credits);
# estimates.
PREVIEW_CREDITS: Mapping[str, int] = {"latest": 20, "meshy-6": 20, "meshy-5": 10}
REFINE_CREDITS = 10
USD_PER_CREDIT = 0.02


def read_meshy_error(status: int, body: Any) -> ErrorDetail:
    """`{"message": ...}`."""
    message = body.get("message") if isinstance(body, dict) else None
    return ErrorDetail(str(message)[:500] if message else None)


class _StageProgress:
    """Reports one task's 0..100 as its span of the job's progress, never going back."""

    def __init__(self, progress: Progress, span: tuple[int, int], stage: str) -> None:
        self.progress = progress
        self.start, self.end = span
        self.stage = stage
        self.reported = self.start

    def __call__(self, task: dict[str, Any]) -> None:
        done = task["progress"] if task["status"] != "SUCCEEDED" else 100
        percent = self.start + (self.end - self.start) * done // 100
        self.reported = max(self.reported, percent)
        self.progress(self.reported, f"Meshy {self.stage}: {task['status'].lower()} ({done}%)")


class MeshyGenerator(RemoteGenerator):
    id = "meshy"
    name = "Meshy"
    categories = ("model3d",)

    default_base_url = MESHY_DEFAULT_BASE_URL
    read_error = staticmethod(read_meshy_error)

    def check_options(self, category: str, options: Mapping[str, Any]) -> dict[str, Any]:
        self.check_category(category)
        refuse_unknown(options, ("ai_model", "art_style", "topology", "target_polycount",
                                 "enable_pbr"))
        checked = {
            "ai_model": pick_choice(options, "ai_model", AI_MODELS, "latest"),
            "art_style": pick_choice(options, "art_style", ART_STYLES, None),
            "topology": pick_choice(options, "topology", TOPOLOGIES, None),
            "target_polycount": pick_number(options, "target_polycount", *POLYCOUNT_RANGE,
                                            None, integer=True),
            "enable_pbr": pick_flag(options, "enable_pbr", False),
        }
        if checked["art_style"] and checked["ai_model"] != "meshy-5":
            raise OptionError("art_style", "art_style applies to meshy-5 only")
        if checked["art_style"] == "sculpture" and checked["enable_pbr"]:
            raise OptionError("enable_pbr", "the sculpture style makes its own PBR maps; "
                                            "enable_pbr must be false with it")
        return checked

    def cost(self, request: GenerationRequest) -> float:
        options = self.check_options(request.category, request.options)
        credits = PREVIEW_CREDITS[options["ai_model"]] + REFINE_CREDITS
        return round(credits * USD_PER_CREDIT, 4)

    def generate(self, request: GenerationRequest, progress: Progress) -> GeneratedFile:
        self.api.require_key()
        options = self.check_options(request.category, request.options)
        progress(PREVIEW_SPAN[0], "asking Meshy for a preview mesh")
        preview_id = self._create(self._preview_body(request, options))
        self._wait(preview_id, _StageProgress(progress, PREVIEW_SPAN, "preview"))
        refine_id = self._create({"mode": "refine", "preview_task_id": preview_id,
                                  "enable_pbr": options["enable_pbr"]})
        task = self._wait(refine_id, _StageProgress(progress, REFINE_SPAN, "refine"))
        urls = task.get("model_urls")
        url = urls.get("glb") if isinstance(urls, dict) else None
        if not isinstance(url, str) or not url:
            raise self.api.fail("bad_response", f"Meshy's task {refine_id} succeeded without "
                                                "a GLB URL")
        progress(REFINE_SPAN[1], "copying the model from Meshy")
        limit = self.settings.max_download_bytes
        data = self.api.download(url, limit)
        metadata = check_file("glb", data, limit, generator=self.id)
        metadata.update(ai_model=options["ai_model"], preview_task_id=preview_id,
                        refine_task_id=refine_id)
        return GeneratedFile(data, "glb", metadata)

    def _preview_body(self, request: GenerationRequest, options: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = {
            "mode": "preview", "prompt": compose_prompt(request, self.id, PROMPT_LIMIT),
            "ai_model": options["ai_model"], "seed": request.seed,
        }
        if options["art_style"]:
            body["art_style"] = options["art_style"]
        if options["topology"] or options["target_polycount"]:
            # Topology and polycount only apply when the mesh is remeshed.
            body["should_remesh"] = True
            for name in ("topology", "target_polycount"):
                if options[name]:
                    body[name] = options[name]
        return body

    def _create(self, body: dict[str, Any]) -> str:
        document = self.api.json_of(self.api.call("POST", TASKS_PATH, json_body=body))
        task_id = document.get("result")
        if not isinstance(task_id, str) or not task_id:
            raise self.api.fail("bad_response", "Meshy answered a new task without its id")
        return task_id

    def _wait(self, task_id: str, report: _StageProgress) -> dict[str, Any]:
        task = self.api.poll(lambda: self._fetch(task_id), lambda t: t["status"] in FINISHED,
                             report, f"Meshy's {report.stage} task {task_id}")
        if task["status"] != "SUCCEEDED":
            error = task.get("task_error")
            reason = error.get("message") if isinstance(error, dict) else None
            raise self.api.fail("failed", f"Meshy's {report.stage} task ended "
                                          f"{task['status']}" + (f": {reason}" if reason else ""))
        return task

    def _fetch(self, task_id: str) -> dict[str, Any]:
        task = self.api.json_of(self.api.call("GET", f"{TASKS_PATH}/{quote(task_id, safe='')}"))
        status = task.get("status")
        if status not in RUNNING | FINISHED:
            raise self.api.fail("bad_response", f"Meshy's task {task_id} has the unknown "
                                                f"status {status!r}")
        done = task.get("progress")
        valid = isinstance(done, int) and not isinstance(done, bool) and 0 <= done <= 100
        return {**task, "progress": done if valid else 0}


KIND = GeneratorKind(
    id="meshy",
    name="Meshy",
    categories=("model3d",),
    factory=MeshyGenerator,
    key_variable="MESHY_API_KEY",
    url_variable="MESHY_BASE_URL",
    default_base_url=MESHY_DEFAULT_BASE_URL,
)
