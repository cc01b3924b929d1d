"""The remote asset generators (OpenAI Images, Stability AI, Meshy, ElevenLabs) against
loopback fakes that speak the providers' real wire formats (`tests.fakes.asset_servers`).

What is checked: the requests each adapter sends (paths, headers, JSON and multipart fields),
the files it hands back (decoded by `checks.check_file`), each provider fault mapped to its
`GeneratorError` kind, the download size cap and redirect rules, polling with progress in
order and `Cancelled` stopping it, option refusals naming the option, and the cost table.
Polling sleeps through an injected clock, so nothing here really waits beyond the short
read timeouts of the timeout tests.
"""

from __future__ import annotations

import io
import json
import socket
import struct
import wave
import zlib

import pytest
from PIL import Image

from gaia_app.generators import elevenlabs, meshy, openai_images, stability
from gaia_app.generators.base import (
    Cancelled,
    GeneratedFile,
    GenerationRequest,
    GeneratorError,
    GeneratorSettings,
    OptionError,
)
from gaia_app.generators.checks import check_file
from gaia_app.generators.remote import ErrorDetail, RemoteAPI
from gaia_app.retry_after import parse_retry_after
from tests.fakes.asset_servers import (
    GARBAGE,
    Fault,
    FakeElevenLabs,
    FakeMeshy,
    FakeOpenAIImages,
    FakeStability,
    grow_png,
    make_glb,
    make_jpeg,
    make_png,
    make_wav,
)

KEY = "sk-right-key"
MB = 1024 * 1024


# -- fixtures and helpers -------------------------------------------------------------------


@pytest.fixture(scope="module")
def oai():
    with FakeOpenAIImages(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def stab():
    with FakeStability(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def mesh():
    with FakeMeshy(api_key=KEY) as server:
        yield server


@pytest.fixture(scope="module")
def eleven():
    with FakeElevenLabs(api_key=KEY) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh(request):
    """Every fake well again after each test."""
    yield
    for name in ("oai", "stab", "mesh", "eleven"):
        if name in request.fixturenames:
            request.getfixturevalue(name).reset()


class FakeTime:
    """An injected clock: `sleep` records the pause and moves `now` on, without waiting."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


class Progress:
    """Records the progress a generator reports; `cancel_at` makes it raise Cancelled."""

    def __init__(self, cancel_at: int | None = None) -> None:
        self.calls: list[tuple[int, str | None]] = []
        self.cancel_at = cancel_at

    def __call__(self, percent: int, message: str | None = None) -> None:
        self.calls.append((percent, message))
        if self.cancel_at is not None and percent >= self.cancel_at:
            raise Cancelled()

    @property
    def percents(self) -> list[int]:
        return [p for p, _ in self.calls]


def settings(fake, generator_id: str, *, path: str = "", key: str = KEY, **overrides):
    values = dict(id=generator_id, base_url=fake.url + path, api_key=key, connect_timeout=1.0,
                  read_timeout=2.0, poll_interval=2.0, task_timeout=60.0,
                  max_download_bytes=8 * MB)
    values.update(overrides)
    return GeneratorSettings(**values)


def openai_gen(oai, **overrides):
    return openai_images.OpenAIImagesGenerator(settings(oai, "openai", path="/v1", **overrides))


def stability_gen(stab, **overrides):
    return stability.StabilityGenerator(settings(stab, "stability", **overrides))


def meshy_gen(mesh, time_=None, **overrides):
    time_ = time_ or FakeTime()
    return meshy.MeshyGenerator(settings(mesh, "meshy", **overrides), sleep=time_.sleep,
                                clock=time_.clock)


def eleven_gen(eleven, **overrides):
    return elevenlabs.ElevenLabsSoundGenerator(settings(eleven, "elevenlabs", **overrides))


def make(generator, category: str = "image", description: str = "a red fox in the snow",
         seed: int = 7, style: str | None = None, progress=None, **options) -> GeneratedFile:
    request = GenerationRequest(category, description, seed, style,
                                options=generator.check_options(category, options))
    return generator.generate(request, progress or Progress())


def failure(generator, **kwargs) -> GeneratorError:
    with pytest.raises(GeneratorError) as caught:
        make(generator, **kwargs)
    assert caught.value.generator == generator.id
    return caught.value


def posts(fake) -> list[dict]:
    return [r for r in fake.api_requests() if r["method"] == "POST"]


# -- checks.check_file ----------------------------------------------------------------------


def test_check_file_accepts_real_files_and_reports_what_they_are():
    assert check_file("png", make_png(40, 30), MB) == {"width": 40, "height": 30, "mode": "RGB"}
    wav = check_file("wav", make_wav(0.5, 22_050), MB)
    assert wav == {"duration_s": 0.5, "sample_rate": 22_050, "channels": 1, "sample_bits": 16}
    glb = check_file("glb", make_glb(), MB)
    assert glb["vertices"] == 3 and glb["triangles"] == 1 and glb["meshes"] == 1


@pytest.mark.parametrize("data, problem", [
    (GARBAGE, "not a PNG"),
    (make_jpeg(), "not a PNG"),
    (make_png()[:-30], "does not decode"),  # cut off inside the image data
    (make_png()[:60], "does not decode"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "does not decode"),
])
def test_check_file_refuses_what_is_no_png(data, problem):
    with pytest.raises(GeneratorError) as caught:
        check_file("png", data, MB, generator="t")
    assert caught.value.kind == "bad_response" and problem in caught.value.message


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + kind + payload
            + struct.pack(">I", zlib.crc32(kind + payload)))


def _grey_png(width: int, height: int, pixels: bytes) -> bytes:
    """A greyscale PNG with `pixels` as its (compressed) image data, every CRC right."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", pixels)
            + _png_chunk(b"IEND", b""))


def test_check_file_decodes_the_pixels_not_only_the_chunk_structure():
    rows = zlib.compress(bytes(range(256)) * 200)  # 200 rows: filter byte 0, then 255 pixels
    assert check_file("png", _grey_png(255, 200, rows), MB)["width"] == 255
    # Chunks and CRCs intact (verify() passes), the compressed pixels cut short.
    with pytest.raises(GeneratorError, match="does not decode"):
        check_file("png", _grey_png(255, 200, rows[:len(rows) // 2]), MB)


def test_check_file_refuses_a_decompression_bomb_before_decoding_it():
    """A PNG claiming 100000 x 100000 pixels (tens of GB decoded) in a few hundred bytes."""
    bomb = _grey_png(100_000, 100_000, zlib.compress(b"\0" * 100_001 * 5))
    assert len(bomb) < 2000
    with pytest.raises(GeneratorError) as caught:
        check_file("png", bomb, MB)
    assert caught.value.kind == "bad_response" and "pixel" in caught.value.message
    # A smaller cap refuses an ordinary image the same way, so the cap is what decides.
    with pytest.raises(GeneratorError, match="pixel"):
        check_file("png", make_png(100, 100), MB, max_pixels=5_000)


def test_check_file_refuses_files_over_the_size_cap():
    png = grow_png(make_png(), 5_000)
    assert check_file("png", png, 10_000)["width"] == 64
    with pytest.raises(GeneratorError, match="over the 4000-byte limit") as caught:
        check_file("png", png, 4_000)
    assert caught.value.kind == "bad_response"


def _wav_with_format_code(code: int) -> bytes:
    wav = bytearray(make_wav())
    wav[20:22] = struct.pack("<H", code)
    return bytes(wav)


@pytest.mark.parametrize("data", [
    GARBAGE, make_png(), make_wav()[:-100], make_wav()[:30],
    _wav_with_format_code(3),  # IEEE float, not PCM
])
def test_check_file_refuses_what_is_no_usable_wav(data):
    with pytest.raises(GeneratorError) as caught:
        check_file("wav", data, MB)
    assert caught.value.kind == "bad_response"


def _glb_with_json(document: dict) -> bytes:
    text = json.dumps(document).encode()
    text += b" " * (-len(text) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body


@pytest.mark.parametrize("data, problem", [
    (GARBAGE, "not a GLB"),
    (make_png(), "not a GLB"),
    (b"glTF" + struct.pack("<II", 1, 20) + b"\0" * 8, "version 1"),
    (make_glb()[:-8], "header says"),  # cut off
    (make_glb() + b"\0" * 4, "header says"),
    (_glb_with_json({"asset": {"version": "1.0"}}), "asset.version"),
    (_glb_with_json({"buffers": [{"byteLength": 44}], "asset": {"version": "2.0"}}),
     "binary chunk"),
    (_glb_with_json({"asset": {"version": "2.0"}, "meshes": [{"primitives": [
        {"attributes": {"POSITION": 5}}]}]}), "describe its meshes"),
])
def test_check_file_refuses_what_is_no_glb(data, problem):
    with pytest.raises(GeneratorError) as caught:
        check_file("glb", data, MB)
    assert caught.value.kind == "bad_response" and problem in caught.value.message


def test_check_file_refuses_a_glb_whose_json_chunk_does_not_parse():
    glb = bytearray(make_glb())
    glb[20:24] = b"{{{{"
    with pytest.raises(GeneratorError, match="does not parse"):
        check_file("glb", bytes(glb), MB)


# -- remote: downloads, errors, polling -----------------------------------------------------


def _no_detail(status: int, body) -> ErrorDetail:
    return ErrorDetail()


def _api(fake, **overrides) -> RemoteAPI:
    return RemoteAPI("t", settings(fake, "t", **overrides), fake.url, {"Authorization": "x"},
                     _no_detail)


def test_download_copies_the_file_without_the_api_credentials(oai):
    url = oai.publish(make_png(), "image/png", "a.png")
    assert _api(oai).download(url, MB) == make_png()
    (fetch,) = oai.downloads()
    assert "authorization" not in fetch["headers"]


@pytest.mark.parametrize("chunked", [False, True])
def test_download_refuses_a_file_over_the_cap_announced_or_not(oai, chunked):
    url = oai.publish(b"x" * 300_000, "image/png", "big.png")
    oai.download_fault = Fault(chunked=chunked)
    with pytest.raises(GeneratorError) as caught:
        _api(oai).download(url, 100_000)
    assert caught.value.kind == "bad_response"
    assert ("announced" in caught.value.message) is not chunked
    assert _api(oai).download(url, 300_000) == b"x" * 300_000


def test_download_follows_http_redirects_but_no_other_scheme(oai):
    url = oai.publish(b"data", "image/png", "a.png")
    oai.download_queue = [Fault(redirect_to=url)]
    assert _api(oai).download(oai.url + "/files/elsewhere/a.png", MB) == b"data"
    for target in ("file:///etc/passwd", "ftp://127.0.0.1/a.png"):
        oai.download_queue = [Fault(redirect_to=target)]
        with pytest.raises(GeneratorError) as caught:
            _api(oai).download(url, MB)
        assert caught.value.kind == "bad_response" and "only http(s)" in caught.value.message
    with pytest.raises(GeneratorError, match="only http"):
        _api(oai).download("file:///etc/passwd", MB)


def test_download_of_an_expired_or_failing_url(oai):
    oai.file_ttl = 0
    url = oai.publish(b"data", "image/png", "a.png")
    with pytest.raises(GeneratorError) as caught:
        _api(oai).download(url, MB)
    assert (caught.value.kind, caught.value.upstream_status) == ("bad_response", 403)
    oai.download_fault = Fault(status=503)
    with pytest.raises(GeneratorError) as caught:
        _api(oai).download(url, MB)
    assert caught.value.kind == "unavailable"


def test_unreachable_and_silent_providers():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    refused = GeneratorSettings(id="openai", base_url=f"http://127.0.0.1:{port}/v1",
                                api_key=KEY, connect_timeout=0.5)
    with pytest.raises(GeneratorError) as caught:
        make(openai_images.OpenAIImagesGenerator(refused))
    assert caught.value.kind == "unavailable" and caught.value.transient


def test_a_provider_slower_than_the_read_timeout_is_a_timeout(oai):
    oai.fault = Fault(delay=1.5)
    error = failure(openai_gen(oai, read_timeout=0.3))
    assert error.kind == "timeout" and error.transient


def test_parse_retry_after_reads_seconds_milliseconds_and_dates():
    assert parse_retry_after({"retry-after": "7"}) == 7.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


def test_poll_reports_every_round_and_gives_up_after_the_task_timeout(mesh):
    time_ = FakeTime()
    api = RemoteAPI("t", settings(mesh, "t", poll_interval=2.0, task_timeout=7.0), mesh.url,
                    {}, _no_detail, sleep=time_.sleep, clock=time_.clock)
    seen: list[int] = []
    with pytest.raises(GeneratorError) as caught:
        api.poll(lambda: len(seen), lambda state: False, seen.append, "the task")
    assert caught.value.kind == "timeout" and "7 s" in caught.value.message
    assert seen == [0, 1, 2, 3] and time_.sleeps == [2.0, 2.0, 2.0]


# -- OpenAI ---------------------------------------------------------------------------------


def test_openai_gpt_image_1_success_and_request_shape(oai):
    progress = Progress()
    result = make(openai_gen(oai), progress=progress, quality="low", size="1536x1024")
    assert (result.format, result.metadata["width"], result.metadata["height"]) == (
        "png", 1536, 1024)
    Image.open(io.BytesIO(result.data)).verify()
    (call,) = posts(oai)
    assert call["path"] == "/v1/images/generations"
    assert call["headers"]["authorization"] == f"Bearer {KEY}"
    assert call["json"] == {"model": "gpt-image-1", "n": 1, "size": "1536x1024",
                            "quality": "low", "prompt": "a red fox in the snow",
                            "output_format": "png"}
    # The cost follows from the usage reported: 400 image tokens at $40/M, 6 words at $5/M.
    assert result.cost == pytest.approx((400 * 40 + 6 * 5) / 1_000_000)
    assert progress.percents == sorted(progress.percents)


def test_openai_dall_e_3_answers_with_a_url_that_is_downloaded_at_once(oai):
    result = make(openai_gen(oai), model="dall-e-3", size="1792x1024", quality="hd",
                  style="watercolour")
    assert (result.metadata["width"], result.metadata["height"]) == (1792, 1024)
    assert result.metadata["revised_prompt"].startswith("A fake revision")
    assert result.cost is None
    (call,) = posts(oai)
    assert call["json"]["response_format"] == "url" and call["json"]["n"] == 1
    assert call["json"]["prompt"] == "a red fox in the snow Style: watercolour."
    (download,) = oai.downloads()
    assert "authorization" not in download["headers"]


def test_openai_texture_prompt_asks_for_a_seamless_tile(oai):
    make(openai_gen(oai), category="texture", description="mossy cobblestones")
    prompt = posts(oai)[0]["json"]["prompt"]
    assert "seamless, tileable texture of mossy cobblestones" in prompt


@pytest.mark.parametrize("fault, kind, status", [
    (Fault(status=500), "unavailable", 500),
    (Fault(status=503), "unavailable", 503),
    (Fault(status=400), "rejected", 400),
    (Fault(status=404), "rejected", 404),
    (Fault(refuse=True), "refused", 400),
])
def test_openai_faults_map_to_kinds(oai, fault, kind, status):
    oai.fault = fault
    error = failure(openai_gen(oai))
    assert (error.kind, error.upstream_status) == (kind, status)


def test_openai_rate_limit_carries_retry_after(oai):
    oai.fault = Fault(status=429, retry_after=7)
    error = failure(openai_gen(oai))
    assert (error.kind, error.retry_after, error.transient) == ("rate_limited", 7.0, True)
    assert "Rate limit reached" in error.message


def test_openai_refusals_of_both_models_are_refused(oai):
    oai.fault = Fault(refuse=True)
    for model in ("gpt-image-1", "dall-e-3"):
        error = failure(openai_gen(oai), model=model)
        assert error.kind == "refused" and "safety system" in error.message


def test_openai_wrong_key_is_unauthorized_and_no_key_never_calls(oai):
    error = failure(openai_gen(oai, key="sk-wrong-key-123"))
    assert (error.kind, error.upstream_status) == ("unauthorized", 401)
    assert "Incorrect API key" in error.message
    calls = len(oai.requests)
    assert failure(openai_gen(oai, key=None)).kind == "unauthorized"
    assert len(oai.requests) == calls


@pytest.mark.parametrize("fault, model", [
    (Fault(garbage=True), "gpt-image-1"),
    (Fault(wrong_type=True), "gpt-image-1"),
    (Fault(wrong_type=True), "dall-e-3"),
    (Fault(oversize=300_000), "gpt-image-1"),
    (Fault(oversize=300_000), "dall-e-3"),
])
def test_openai_files_that_are_not_a_png_within_the_cap_are_bad_responses(oai, fault, model):
    oai.fault = fault
    error = failure(openai_gen(oai, max_download_bytes=200_000), model=model)
    assert error.kind == "bad_response" and not error.transient


def test_openai_options(oai):
    generator = openai_gen(oai)
    assert generator.check_options("image", {}) == {
        "model": "gpt-image-1", "size": "1024x1024", "quality": "medium"}
    assert generator.check_options("texture", {"model": "dall-e-3"})["quality"] == "standard"
    for options, name in [({"colour": "red"}, "colour"), ({"size": "640x480"}, "size"),
                          ({"model": "dall-e-3", "quality": "high"}, "quality"),
                          ({"model": "dall-e-3", "size": "1536x1024"}, "size"),
                          ({"quality": 3}, "quality"), ({"model": "midjourney"}, "model")]:
        with pytest.raises(OptionError) as caught:
            generator.check_options("image", options)
        assert caught.value.option == name
    with pytest.raises(OptionError):
        generator.check_options("audio", {})


# -- Stability ------------------------------------------------------------------------------


def test_stability_core_success_and_multipart_fields(stab):
    result = make(stability_gen(stab), aspect_ratio="16:9", negative_prompt="blur",
                  style_preset="pixel-art", seed=1234)
    assert (result.metadata["width"], result.metadata["height"]) == (1344, 768)
    assert result.metadata["provider_seed"] == "1234"
    (call,) = posts(stab)
    assert call["path"] == "/v2beta/stable-image/generate/core"
    assert call["headers"]["authorization"] == f"Bearer {KEY}"
    assert call["headers"]["accept"] == "image/*"
    assert call["headers"]["content-type"].startswith("multipart/form-data; boundary=")
    assert call["form"] == {"prompt": "a red fox in the snow", "aspect_ratio": "16:9",
                            "seed": "1234", "output_format": "png", "negative_prompt": "blur",
                            "style_preset": "pixel-art"}


def test_stability_sd3_models_post_to_sd3_with_their_model_field(stab):
    make(stability_gen(stab), model="sd3.5-large-turbo")
    make(stability_gen(stab), model="ultra", category="texture")
    sd3, ultra = posts(stab)
    assert sd3["path"].endswith("/generate/sd3") and sd3["form"]["model"] == "sd3.5-large-turbo"
    assert ultra["path"].endswith("/generate/ultra") and "model" not in ultra["form"]
    assert "seamless, tileable texture" in ultra["form"]["prompt"]


def test_stability_json_answer_shape_is_read_too(stab):
    """With `Accept: application/json` the image is base64 in `{"image", "finish_reason",
    "seed"}`; the adapter reads that shape as well as the bytes-and-headers one."""
    generator = stability_gen(stab)
    stab.fault = Fault(filtered=True)
    answer = generator.api.call("POST", "/v2beta/stable-image/generate/core",
                                form={"prompt": "a fox", "seed": 99, "output_format": "png"},
                                headers={"Accept": "application/json"}, max_bytes=MB)
    assert answer.content_type == "application/json"
    data, finish_reason, seed = generator._image_of(answer)
    assert (finish_reason, seed) == ("CONTENT_FILTERED", "99")
    assert check_file("png", data, MB)["width"] == 1024


def test_stability_content_filtered_finish_reason_is_a_refusal(stab):
    stab.fault = Fault(filtered=True)
    error = failure(stability_gen(stab))
    assert error.kind == "refused" and "CONTENT_FILTERED" in error.message


@pytest.mark.parametrize("fault, kind, status", [
    (Fault(refuse=True), "refused", 403),
    (Fault(status=400), "rejected", 400),
    (Fault(status=413), "rejected", 413),
    (Fault(status=422), "rejected", 422),
    (Fault(status=500), "unavailable", 500),
])
def test_stability_faults_map_to_kinds(stab, fault, kind, status):
    stab.fault = fault
    error = failure(stability_gen(stab))
    assert (error.kind, error.upstream_status) == (kind, status)
    name = {403: "content_moderation", 413: "payload_too_large", 500: "internal_error"}
    if status in name:
        assert name[status] in error.message


def test_stability_rate_limit_and_wrong_key(stab):
    stab.fault = Fault(status=429, retry_after=3)
    error = failure(stability_gen(stab))
    assert (error.kind, error.retry_after) == ("rate_limited", 3.0)
    stab.fault = Fault()
    error = failure(stability_gen(stab, key="sk-nope"))
    assert (error.kind, error.upstream_status) == ("unauthorized", 401)
    assert "authorization" in error.message


@pytest.mark.parametrize("fault", [Fault(garbage=True), Fault(wrong_type=True),
                                   Fault(oversize=300_000)])
def test_stability_files_that_are_not_a_png_within_the_cap_are_bad_responses(stab, fault):
    stab.fault = fault
    error = failure(stability_gen(stab, max_download_bytes=200_000))
    assert error.kind == "bad_response"


def test_stability_options(stab):
    generator = stability_gen(stab)
    assert generator.check_options("image", {}) == {
        "model": "core", "aspect_ratio": "1:1", "negative_prompt": None, "style_preset": None}
    for options, name in [({"aspect_ratio": "4:3"}, "aspect_ratio"),
                          ({"model": "sdxl"}, "model"), ({"steps": 30}, "steps"),
                          ({"style_preset": "anime", "model": "ultra"}, "style_preset"),
                          ({"negative_prompt": "x", "model": "sd3.5-large-turbo"},
                           "negative_prompt"),
                          ({"negative_prompt": ""}, "negative_prompt"),
                          ({"style_preset": "vaporwave"}, "style_preset")]:
        with pytest.raises(OptionError) as caught:
            generator.check_options("image", options)
        assert caught.value.option == name


# -- Meshy ----------------------------------------------------------------------------------


def test_meshy_preview_then_refine_then_download_with_progress_in_order(mesh):
    time_, progress = FakeTime(), Progress()
    result = make(meshy_gen(mesh, time_), category="model3d", progress=progress,
                  topology="quad", target_polycount=5000)
    assert result.format == "glb" and result.metadata["triangles"] == 1
    preview, refine = posts(mesh)
    assert preview["headers"]["authorization"] == f"Bearer {KEY}"
    assert preview["json"] == {"mode": "preview", "prompt": "a red fox in the snow",
                               "ai_model": "latest", "seed": 7, "should_remesh": True,
                               "topology": "quad", "target_polycount": 5000}
    assert refine["json"] == {"mode": "refine", "enable_pbr": False,
                              "preview_task_id": result.metadata["preview_task_id"]}
    assert result.metadata["refine_task_id"] != result.metadata["preview_task_id"]
    # Each task: PENDING, 33 %, 66 %, then done; the preview is 0..50, the refine 50..95.
    assert progress.percents == [0, 0, 16, 33, 50, 50, 64, 79, 95, 95]
    assert time_.sleeps == [2.0] * 6
    polls = [r for r in mesh.api_requests() if r["method"] == "GET"]
    assert len(polls) == 8 and len(mesh.downloads()) == 1


def test_meshy_failed_tasks_are_failed_with_the_providers_reason(mesh):
    for stage in ("preview", "refine"):
        mesh.reset()
        setattr(mesh, f"end_{stage}", "FAILED")
        error = failure(meshy_gen(mesh), category="model3d")
        assert error.kind == "failed" and not error.transient
        assert f"{stage} task ended FAILED: The server is busy" in error.message
        assert len(posts(mesh)) == (1 if stage == "preview" else 2)


def test_meshy_canceled_task_is_failed(mesh):
    mesh.end_refine = "CANCELED"
    error = failure(meshy_gen(mesh), category="model3d")
    assert error.kind == "failed" and "CANCELED" in error.message


def test_meshy_cancelled_job_stops_polling(mesh):
    progress = Progress(cancel_at=16)
    with pytest.raises(Cancelled):
        make(meshy_gen(mesh), category="model3d", progress=progress)
    assert progress.percents[-1] == 16
    assert len(posts(mesh)) == 1  # no refine was started
    gets = [r for r in mesh.api_requests() if r["method"] == "GET"]
    assert len(gets) == 2


def test_meshy_task_timeout(mesh):
    mesh.steps = 50
    error = failure(meshy_gen(mesh, poll_interval=5.0, task_timeout=30.0), category="model3d")
    assert error.kind == "timeout" and "preview task" in error.message


def test_meshy_expired_download_url_is_a_bad_response(mesh):
    mesh.file_ttl = 0  # the URL has expired by the time anyone fetches it
    error = failure(meshy_gen(mesh), category="model3d")
    assert (error.kind, error.upstream_status) == ("bad_response", 403)


@pytest.mark.parametrize("model_fault", [Fault(garbage=True), Fault(wrong_type=True),
                                         Fault(oversize=300_000)])
def test_meshy_files_that_are_not_a_glb_within_the_cap_are_bad_responses(mesh, model_fault):
    mesh.model_fault = model_fault
    error = failure(meshy_gen(mesh, max_download_bytes=200_000), category="model3d")
    assert error.kind == "bad_response"


@pytest.mark.parametrize("fault, kind", [
    (Fault(status=402), "unauthorized"), (Fault(status=429, retry_after=2), "rate_limited"),
    (Fault(status=500), "unavailable"), (Fault(status=400), "rejected"),
])
def test_meshy_faults_map_to_kinds(mesh, fault, kind):
    mesh.fault = fault
    error = failure(meshy_gen(mesh), category="model3d")
    assert error.kind == kind
    assert error.retry_after == fault.retry_after


def test_meshy_wrong_key(mesh):
    error = failure(meshy_gen(mesh, key="msy-wrong"), category="model3d")
    assert (error.kind, error.message) == ("unauthorized", "meshy answered 401: Invalid API key")


def test_meshy_prompt_over_its_limit_is_rejected_without_a_call(mesh):
    error = failure(meshy_gen(mesh), category="model3d", description="x" * 601)
    assert error.kind == "rejected" and "600" in error.message
    assert mesh.requests == []


def test_meshy_options(mesh):
    generator = meshy_gen(mesh)
    assert generator.check_options("model3d", {}) == {
        "ai_model": "latest", "art_style": None, "topology": None, "target_polycount": None,
        "enable_pbr": False}
    for options, name in [({"target_polycount": 50}, "target_polycount"),
                          ({"target_polycount": 1000.5}, "target_polycount"),
                          ({"target_polycount": True}, "target_polycount"),
                          ({"topology": "ngon"}, "topology"), ({"enable_pbr": "yes"}, "enable_pbr"),
                          ({"art_style": "cartoon", "ai_model": "meshy-5"}, "art_style"),
                          ({"art_style": "sculpture"}, "art_style"),
                          ({"art_style": "sculpture", "ai_model": "meshy-5", "enable_pbr": True},
                           "enable_pbr"), ({"texture": "wood"}, "texture")]:
        with pytest.raises(OptionError) as caught:
            generator.check_options("model3d", options)
        assert caught.value.option == name


# -- ElevenLabs -----------------------------------------------------------------------------


def test_elevenlabs_success_wraps_pcm_into_a_wav(eleven):
    result = make(eleven_gen(eleven), category="audio", description="a door creaks open",
                  duration=0.5, prompt_influence=0.6)
    assert result.format == "wav" and result.content_type == "audio/wav"
    assert result.metadata["duration_s"] == 0.5 and result.metadata["sample_rate"] == 44_100
    with wave.open(io.BytesIO(result.data)) as reader:
        assert (reader.getnchannels(), reader.getsampwidth()) == (1, 2)
    (call,) = posts(eleven)
    assert call["path"] == "/v1/sound-generation"
    assert call["query"] == {"output_format": "pcm_44100"}
    assert call["headers"]["xi-api-key"] == KEY and "authorization" not in call["headers"]
    assert call["json"] == {"text": "a door creaks open", "prompt_influence": 0.6,
                            "duration_seconds": 0.5}


def test_elevenlabs_without_a_duration_lets_the_provider_choose(eleven):
    result = make(eleven_gen(eleven), category="audio")
    assert "duration_seconds" not in posts(eleven)[0]["json"]
    assert result.metadata["duration_s"] == FakeElevenLabs.AUTO_DURATION


@pytest.mark.parametrize("fault, kind, words", [
    (Fault(status=422), "rejected", "body.text: Field required"),
    (Fault(status=401), "unauthorized", "quota_exceeded"),
    (Fault(status=429, retry_after=4), "rate_limited", "too_many_concurrent_requests"),
    (Fault(status=500), "unavailable", "internal_error"),
])
def test_elevenlabs_faults_map_to_kinds(eleven, fault, kind, words):
    eleven.fault = fault
    error = failure(eleven_gen(eleven), category="audio")
    assert error.kind == kind and words in error.message
    assert error.retry_after == fault.retry_after


def test_elevenlabs_wrong_key(eleven):
    error = failure(eleven_gen(eleven, key="xi-wrong"), category="audio")
    assert (error.kind, error.message) == (
        "unauthorized", "elevenlabs answered 401: invalid_api_key: Invalid API key")


@pytest.mark.parametrize("fault", [Fault(garbage=True), Fault(wrong_type=True),
                                   Fault(oversize=300_000)])
def test_elevenlabs_answers_that_are_not_pcm_within_the_cap_are_bad_responses(eleven, fault):
    eleven.fault = fault
    error = failure(eleven_gen(eleven, max_download_bytes=200_000), category="audio")
    assert error.kind == "bad_response"


def test_elevenlabs_options(eleven):
    generator = eleven_gen(eleven)
    assert generator.check_options("audio", {}) == {"duration": None, "prompt_influence": 0.3}
    for options, name in [({"duration": 0.2}, "duration"), ({"duration": 31}, "duration"),
                          ({"duration": "5"}, "duration"), ({"prompt_influence": 1.5},
                                                            "prompt_influence"),
                          ({"duration": float("nan")}, "duration"), ({"voice": "x"}, "voice")]:
        with pytest.raises(OptionError) as caught:
            generator.check_options("audio", options)
        assert caught.value.option == name
    with pytest.raises(OptionError):
        generator.check_options("image", {})


# -- costs and kinds ------------------------------------------------------------------------


@pytest.mark.parametrize("make_generator, category, options", [
    (openai_gen, "image", {"model": "dall-e-3", "size": None}),
    (stability_gen, "texture", {"model": "ultra", "negative_prompt": "text"}),
    (meshy_gen, "model3d", {"ai_model": "meshy-5", "art_style": "sculpture"}),
    (eleven_gen, "audio", {"duration": 2}),
])
def test_checked_options_check_again_unchanged_and_null_means_default(
        make_generator, category, options, oai, stab, mesh, eleven):
    fakes = {openai_gen: oai, stability_gen: stab, meshy_gen: mesh, eleven_gen: eleven}
    generator = make_generator(fakes[make_generator])
    checked = generator.check_options(category, options)
    assert generator.check_options(category, checked) == checked
    assert all(checked[name] is not None for name, value in options.items() if value is None)


def _cost(generator, category: str, **options) -> float:
    return generator.cost(GenerationRequest(category, "x", 1, options=options))


def test_cost_estimates_follow_the_tables(oai, stab, mesh, eleven):
    assert _cost(openai_gen(oai), "image") == 0.042
    assert _cost(openai_gen(oai), "image", quality="high", size="1024x1536") == 0.25
    assert _cost(openai_gen(oai), "image", quality="auto", size="auto") == 0.25
    assert _cost(openai_gen(oai), "texture", model="dall-e-3", quality="hd") == 0.08
    assert _cost(stability_gen(stab), "image") == 0.03
    assert _cost(stability_gen(stab), "image", model="ultra") == 0.08
    assert _cost(meshy_gen(mesh), "model3d") == 0.6
    assert _cost(meshy_gen(mesh), "model3d", ai_model="meshy-5") == 0.4
    assert _cost(eleven_gen(eleven), "audio") == pytest.approx(0.024)
    assert _cost(eleven_gen(eleven), "audio", duration=10) == pytest.approx(0.048)


@pytest.mark.parametrize("module, categories, key, fallback, url_variable, base", [
    (openai_images, ("image", "texture"), "OPENAI_IMAGES_API_KEY", "OPENAI_API_KEY",
     "OPENAI_IMAGES_BASE_URL", "https://api.openai.com/v1"),
    (stability, ("image", "texture"), "STABILITY_API_KEY", None, "STABILITY_BASE_URL",
     "https://api.stability.ai"),
    (meshy, ("model3d",), "MESHY_API_KEY", None, "MESHY_BASE_URL", "https://api.meshy.ai"),
    (elevenlabs, ("audio",), "ELEVENLABS_API_KEY", None, "ELEVENLABS_BASE_URL",
     "https://api.elevenlabs.io"),
])
def test_each_module_declares_its_kind(module, categories, key, fallback, url_variable, base):
    kind = module.KIND
    assert (kind.categories, kind.key_variable, kind.fallback_key_variable, kind.url_variable,
            kind.default_base_url) == (categories, key, fallback, url_variable, base)
    generator = kind.factory(GeneratorSettings(id=kind.id, api_key="k"))
    assert (generator.id, generator.categories) == (kind.id, categories)
    assert generator.api.base_url == base
    assert generator.api.timeout == (5.0, 120.0)
