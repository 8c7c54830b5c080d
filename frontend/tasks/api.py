"""The task APIs: the whisperX-FastAPI and insanely-fast-whisper-api dialects on one task model."""

from __future__ import annotations

import datetime
import json
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.status_codes import HTTP_404_NOT_FOUND, HTTP_409_CONFLICT

from frontend.errors import APIError, bad_request, model_not_found, overloaded
from frontend.formats import to_srt, to_text, to_vtt
from frontend.forms import FormReader, read_multipart, speaker_count
from frontend.routes import Services, require_api_key, services
from frontend.tasks.model import TASK_ID, Task, TaskRequest, Webhook, new_task
from whisper_triton.contract import decode_transcript
from whisper_triton.errors import InvalidRequestError, is_client_fault
from whisper_triton.languages import normalize_language
from whisper_triton.speakers import assign_speakers


async def find_task(svc: Services, task_id: str) -> Task:
    """The task, or a 404 in OpenAI's error shape."""
    task = await svc.store.get(task_id)
    if task is None:
        raise not_found(task_id)
    return task


def not_found(task_id: str) -> APIError:
    return APIError(HTTP_404_NOT_FOUND, f"No task with id '{task_id[:64]}'.", param="task_id", code="task_not_found")


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(timestamp, datetime.UTC).isoformat()


def task_view(task: Task, with_result: bool = True) -> dict[str, Any]:
    """whisperX-FastAPI's task object (plus progress), the shape the web page reads."""
    return {
        "identifier": task.id,
        "status": task.status,
        "progress": task.progress,
        "result": task.result if with_result else None,
        "error": msgspec.to_builtins(task.error) if task.error else None,
        "webhook": task.webhook_delivery,
        "metadata": {
            "task_type": task.request.task,
            "source": task.source,
            "file_name": task.request.file_name,
            "url": task.request.url,
            "model": task.request.model,
            "language": (task.result.language if task.result else None) or task.request.language,
            "word_timestamps": task.request.word_timestamps,
            "audio_duration": task.audio_duration,
            "created_at": _iso(task.created_at),
            "start_time": _iso(task.started_at),
            "end_time": _iso(task.completed_at),
            "duration": task.processing_seconds,
            "attempts": task.attempts,
        },
    }


async def enqueue(svc: Services, request: TaskRequest, source: str, audio: bytes | None,
                  task_id: str | None = None) -> Task:
    """Stores a queued task (FIFO) or refuses with 503 + Retry-After when the queue is full."""
    model = svc.settings.resolve_model(request.model or "")
    if model is None:
        raise model_not_found(request.model or "")
    request = msgspec.structs.replace(request, model=model)
    if task_id is not None:
        if not TASK_ID.match(task_id):
            raise bad_request("Task ids are 1 to 64 letters, digits, '-' or '_'.", param="managed_task_id")
        if await svc.store.get(task_id) is not None:
            raise APIError(HTTP_409_CONFLICT, f"A task with id '{task_id}' exists.", param="managed_task_id",
                           code="task_exists")
    task = new_task(request, source, task_id)
    if not await svc.store.create(task, audio, max_queued=svc.settings.max_task_queue_size):
        raise overloaded(f"The task queue is full ({svc.settings.max_task_queue_size} waiting); retry later.",
                         retry_after=svc.settings.retry_after_s)
    svc.runner.wake()
    return task


def _language(value: str | None) -> str | None:
    try:
        return normalize_language(value)
    except InvalidRequestError as exc:
        raise bad_request(exc.message, param="language") from exc


def _webhook(url: str | None, headers: object) -> Webhook | None:
    if not url:
        return None
    if headers is None:
        headers = {}
    if isinstance(headers, str):
        try:
            headers = json.loads(headers) if headers.strip() else {}
        except json.JSONDecodeError:
            raise bad_request("Webhook headers must be a JSON object.", param="webhook") from None
    if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
        raise bad_request("Webhook headers must be an object of strings.", param="webhook")
    return Webhook(url=url, headers={str(k): v for k, v in headers.items()})


def _whisperx_request(svc: Services, reader: FormReader, file_name: str | None, url: str | None,
                      task: str | None = None) -> TaskRequest:
    task = task or (reader.text("task") or "transcribe").lower()
    if task not in ("transcribe", "translate", "diarize"):
        raise bad_request("task must be 'transcribe' or 'translate'.", param="task")
    diarize = task == "diarize" or reader.boolean("diarize") or reader.boolean("diarization")
    return TaskRequest(
        model=reader.text("model") or svc.settings.served_model,
        task=task,
        language=_language(reader.text("language")),
        prompt=reader.text("initial_prompt") or reader.text("prompt"),
        temperature=reader.number("temperature", 0.0, 0.0, 1.0),
        word_timestamps=reader.boolean("word_timestamps", True),
        dialect="whisperx",
        file_name=file_name,
        url=url,
        webhook=_webhook(reader.text("webhook_url"), reader.text("webhook_headers")),
        diarize=diarize,
        num_speakers=speaker_count(reader, "num_speakers"),
        min_speakers=speaker_count(reader, "min_speakers"),
        max_speakers=speaker_count(reader, "max_speakers"),
    )


def _query_and_form(request: Request[Any, Any, Any], fields: dict[str, list[str]]) -> FormReader:
    merged = {key: list(values) for key, values in request.query_params.dict().items()}
    merged.update(fields)
    return FormReader(merged)


class WhisperXController(Controller):
    """whisperX-FastAPI's routes."""

    guards = [require_api_key]  # noqa: RUF012
    tags = ["tasks (whisperX-FastAPI)"]  # noqa: RUF012

    @post("/speech-to-text", operation_id="createSpeechToTextTask", status_code=200)
    async def create_upload_task(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Queues the transcription of an uploaded file; returns its identifier."""
        return await _upload_task(request)

    @post("/service/transcribe", operation_id="serviceTranscribe", status_code=200)
    async def service_transcribe(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """The transcription step alone (same as /speech-to-text: word timings come with it)."""
        return await _upload_task(request)


    @post("/speech-to-text-url", operation_id="createSpeechToTextUrlTask", status_code=200)
    async def create_url_task(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Queues the transcription of audio at a URL (http/https, public addresses only by default)."""
        svc = services(request)
        fields = await _body_fields(request)
        reader = _query_and_form(request, fields)
        url = reader.text("url")
        if not url:
            raise bad_request("You must provide the 'url' of the audio.", param="url",
                              code="missing_required_parameter")
        await svc.check_url(url)
        task = await enqueue(svc, _whisperx_request(svc, reader, None, url), "url", None)
        return {"identifier": task.id, "message": "Task queued"}

    @get("/task/all", operation_id="listTasks")
    async def list_tasks(self, request: Request[Any, Any, Any]) -> dict[str, list[dict[str, Any]]]:
        """The most recent tasks, newest first, without their results."""
        tasks = await services(request).store.list_tasks(limit=100)
        return {"tasks": [task_view(task, with_result=False) for task in tasks]}

    @get("/task/{task_id:str}", operation_id="getTask")
    async def get_task(self, request: Request[Any, Any, Any], task_id: FromPath[str]) -> dict[str, Any]:
        task = await find_task(services(request), task_id)
        return task_view(task)

    @get("/task/{task_id:str}/result", operation_id="getTaskResult")
    async def get_task_result(self, request: Request[Any, Any, Any], task_id: FromPath[str],
                              format: FromQuery[str] = "json") -> Response[Any]:
        """The result as a file: json, txt, srt or vtt."""
        task = await find_task(services(request), task_id)
        if task.result is None:
            raise bad_request(f"The task is {task.status}; it has no result.", param="task_id", code="no_result")
        return result_file(task, format)

    @delete("/task/{task_id:str}/delete", operation_id="deleteTask", status_code=200)
    async def delete_task(self, request: Request[Any, Any, Any], task_id: FromPath[str]) -> dict[str, str]:
        svc = services(request)
        task = await find_task(svc, task_id)
        if not task.finished:
            await svc.store.request_cancel(task_id)
        await svc.store.delete(task_id)
        return {"message": "Task deleted"}

    @post("/service/align", operation_id="serviceAlign", status_code=200)
    async def service_align(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Word timings for a given transcript: multipart `file` (audio) and `transcript` (JSON segments)."""
        svc = services(request)
        fields, files = await read_multipart(request, svc.settings.max_upload_bytes)
        upload = files.get("file")
        if upload is None or not upload.data:
            raise bad_request("You must provide the audio as the 'file' part.", param="file",
                              code="missing_required_parameter")
        raw = files["transcript"].data if "transcript" in files else (fields.get("transcript") or [""])[0].encode()
        try:
            segments = decode_transcript(raw)
            if not segments or not all(isinstance(s.get("text"), str) for s in segments):
                raise ValueError("segments need 'text'")
        except (ValueError, msgspec.DecodeError) as exc:
            raise bad_request(f"'transcript' must be JSON segments with start, end and text ({exc}).",
                              param="transcript") from exc
        reader = _query_and_form(request, fields)
        task_request = TaskRequest(
            model=reader.text("model") or svc.settings.served_model, task="align",
            language=_language(reader.text("language")), word_timestamps=True, dialect="whisperx",
            file_name=upload.filename, transcript=segments,
        )
        task = await enqueue(svc, task_request, "upload", upload.data)
        return {"identifier": task.id, "message": "Task queued"}

    @post("/service/diarize", operation_id="serviceDiarize", status_code=200)
    async def service_diarize(self, request: Request[Any, Any, Any]) -> dict[str, str]:
        """Speaker turns only (no transcript): the result's `speakers` is `[{start, end, speaker}]`."""
        return await _upload_task(request, task="diarize")

    @post("/service/combine", operation_id="combineTranscriptAndSpeakers", status_code=200)
    async def combine(self, data: JSONBody[dict[str, Any]]) -> dict[str, Any]:
        """Merges a transcript's segments with speaker turns (`{"transcript": {...}, "diarization": [...]}`)."""
        transcript = data.get("transcript")
        turns = data.get("diarization", data.get("diarization_segments"))
        if not isinstance(transcript, dict) or not isinstance(transcript.get("segments"), list):
            raise bad_request("'transcript' must be an object with 'segments'.", param="transcript")
        if not isinstance(turns, list) or not all(
            isinstance(t, dict) and {"start", "end", "speaker"} <= set(t) for t in turns
        ):
            raise bad_request("'diarization' must be a list of {start, end, speaker}.", param="diarization")
        try:
            segments = assign_speakers(transcript["segments"], turns)
        except (KeyError, TypeError, ValueError) as exc:
            raise bad_request(f"Segments and turns need numeric 'start' and 'end': {exc}",
                              param="transcript") from exc
        return {**transcript, "segments": segments}


async def _upload_task(request: Request[Any, Any, Any], task: str | None = None) -> dict[str, str]:
    svc = services(request)
    fields, files = await read_multipart(request, svc.settings.max_upload_bytes)
    upload = files.get("file")
    if upload is None:
        raise bad_request("You must provide a 'file' part with the audio.", param="file",
                          code="missing_required_parameter")
    if not upload.data:
        raise bad_request("The audio file is empty.", param="file", code="invalid_audio")
    task_request = _whisperx_request(svc, _query_and_form(request, fields), upload.filename, None, task)
    queued = await enqueue(svc, task_request, "upload", upload.data)
    return {"identifier": queued.id, "message": "Task queued"}


def result_file(task: Task, fmt: str) -> Response[Any]:
    from frontend.responses import JSON, TEXT, VTT
    from frontend.responses import segments as wire_segments

    result = task.result
    assert result is not None
    name = f"transcript-{task.id[:8]}"
    disposition = {"Content-Disposition": f'attachment; filename="{name}.{fmt}"'}
    if fmt == "json":
        return Response(msgspec.json.encode(result), media_type=JSON, headers=disposition)
    if fmt == "txt":
        return Response(to_text(result.text), media_type=TEXT, headers=disposition)
    if fmt in ("srt", "vtt"):
        cues = wire_segments(result)
        body = to_srt(cues) if fmt == "srt" else to_vtt(cues)
        return Response(body, media_type=TEXT if fmt == "srt" else VTT, headers=disposition)
    raise bad_request("format must be json, txt, srt or vtt.", param="format", code="unsupported_value")


async def _body_fields(request: Request[Any, Any, Any]) -> dict[str, list[str]]:
    media_type, _ = request.content_type
    if media_type == "application/json":
        body = await _json_body(request)
        return {str(k): [v if isinstance(v, str) else json.dumps(v)] for k, v in body.items() if v is not None}
    if media_type == "multipart/form-data":
        fields, _ = await read_multipart(request, services(request).settings.max_upload_bytes)
        return fields
    if media_type == "application/x-www-form-urlencoded":
        form = await request.form()
        return {key: [str(v) for v in form.getall(key)] for key in form}
    return {}


async def _json_body(request: Request[Any, Any, Any]) -> dict[str, Any]:
    try:
        body = msgspec.json.decode(await request.body())
    except msgspec.DecodeError as exc:
        raise bad_request(f"The body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(body, dict):
        raise bad_request("The body must be a JSON object.", code="invalid_json")
    return body


class InsanelyFastWhisperController(Controller):
    """insanely-fast-whisper-api's routes."""

    guards = [require_api_key]  # noqa: RUF012
    tags = ["tasks (insanely-fast-whisper-api)"]  # noqa: RUF012

    @post("/", operation_id="ifwCreate", status_code=200)
    async def create(self, request: Request[Any, Any, Any]) -> dict[str, Any]:
        """`{url, task, language, batch_size, timestamp, diarise_audio, webhook, is_async, managed_task_id}`."""
        svc = services(request)
        body = await _json_body(request)
        url = body.get("url")
        if not isinstance(url, str) or not url:
            raise bad_request("You must provide the 'url' of the audio.", param="url",
                              code="missing_required_parameter")
        timestamp = body.get("timestamp", "chunk")
        if timestamp not in ("chunk", "word"):
            raise bad_request("timestamp must be 'chunk' or 'word'.", param="timestamp")
        task = body.get("task", "transcribe")
        if task not in ("transcribe", "translate"):
            raise bad_request("task must be 'transcribe' or 'translate'.", param="task")
        webhook = body.get("webhook") or {}
        if not isinstance(webhook, dict):
            raise bad_request("webhook must be an object {url, header}.", param="webhook")
        await svc.check_url(url)
        if webhook.get("url"):
            await svc.check_url(str(webhook["url"]), param="webhook")
        task_request = TaskRequest(
            model=str(body.get("model") or svc.settings.served_model), task=task,
            language=_language(body.get("language") if isinstance(body.get("language"), str) else None),
            word_timestamps=timestamp == "word", dialect="ifw", url=url, diarize=bool(body.get("diarise_audio")),
            webhook=_webhook(webhook.get("url"), webhook.get("header", webhook.get("headers"))),
        )
        managed = body.get("managed_task_id")
        queued = await enqueue(svc, task_request, "url", None, task_id=str(managed) if managed else None)
        if body.get("is_async", False):
            return {"detail": "Task is being processed in the background", "status": "processing",
                    "task_id": queued.id}
        finished = await svc.wait_for(queued.id)
        if finished.status != "completed":
            error = finished.error
            raise APIError(400 if error and is_client_fault(error.code) else 500,
                           error.message if error else f"The task ended {finished.status}.",
                           code=error.code if error else None)
        return ifw_output(finished)

    @get("/tasks", operation_id="ifwListTasks")
    async def list_tasks(self, request: Request[Any, Any, Any]) -> dict[str, list[dict[str, Any]]]:
        tasks = await services(request).store.list_tasks(limit=100)
        return {"tasks": [ifw_status(task, with_output=False) for task in tasks]}

    @get("/status/{task_id:str}", operation_id="ifwStatus")
    async def status(self, request: Request[Any, Any, Any], task_id: FromPath[str]) -> dict[str, Any]:
        task = await find_task(services(request), task_id)
        return ifw_status(task)

    @delete("/cancel/{task_id:str}", operation_id="ifwCancel", status_code=200)
    async def cancel(self, request: Request[Any, Any, Any], task_id: FromPath[str]) -> dict[str, Any]:
        svc = services(request)
        task = await svc.store.request_cancel(task_id)
        if task is None:
            raise not_found(task_id)
        if task.status in ("completed", "failed"):
            raise APIError(HTTP_409_CONFLICT, f"The task already ended ({task.status}).", param="task_id",
                           code="task_finished")
        return {"status": "cancelled", "task_id": task_id}


def ifw_output(task: Task) -> dict[str, Any]:
    """insanely-fast-whisper's output: `text`, `chunks` of segments (or words), `speakers`."""
    segments = task.result.segments if task.result else []
    if task.request.word_timestamps:
        chunks = [{"timestamp": [w.start, w.end], "text": w.word} for s in segments for w in s.words]
    else:
        chunks = [{"timestamp": [s.start, s.end], "text": s.text} for s in segments]
    speakers = [{"speaker": s.speaker, "timestamp": [s.start, s.end], "text": s.text}
                for s in segments if s.speaker is not None]
    return {"speakers": speakers, "chunks": chunks, "text": task.result.text if task.result else ""}


def ifw_status(task: Task, with_output: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {"task_id": task.id, "status": task.status, "progress": task.progress,
                            "url": task.request.url, "created_at": _iso(task.created_at),
                            "webhook": task.webhook_delivery}
    if task.error is not None:
        body["error"] = task.error.message
    if with_output and task.result is not None:
        body["output"] = ifw_output(task)
    return body
