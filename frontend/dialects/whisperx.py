"""whisperX-FastAPI's task API: uploads and URLs queued as tasks, their status and results, and the service
steps (transcribe, align, diarize, combine)."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody

from frontend.dialects.parsing import body_fields, iso_time, language, owner_name, query_and_form, webhook
from frontend.errors import bad_request
from frontend.formats import to_srt, to_text, to_vtt
from frontend.guards import require_api_key
from frontend.keys import Principal
from frontend.openai.render import JSON, TEXT, VTT
from frontend.openai.render import segments as wire_segments
from frontend.request_bodies import FormReader, read_multipart
from frontend.settings import FrontendSettings
from frontend.tasks.queue import TaskQueue
from frontend.tasks.records import Task, TaskRequest
from whisper_triton.contract import decode_transcript
from whisper_triton.speakers import assign_speakers


def task_view(task: Task, with_result: bool = True, owner: str | None = None) -> dict[str, Any]:
    """whisperX-FastAPI's task object (plus progress), the shape the web page reads; `owner`: the name of the
    key that owns the task (shown to that key and to the admin only: nobody else sees the task)."""
    view: dict[str, Any] = {
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
            "created_at": iso_time(task.created_at),
            "start_time": iso_time(task.started_at),
            "end_time": iso_time(task.completed_at),
            "duration": task.processing_seconds,
            "attempts": task.attempts,
        },
    }
    if owner is not None:
        view["metadata"]["owner"] = owner
    return view


def _task_request(settings: FrontendSettings, reader: FormReader, file_name: str | None, url: str | None,
                  task: str | None = None) -> TaskRequest:
    task = task or (reader.text("task") or "transcribe").lower()
    if task not in ("transcribe", "translate", "diarize"):
        raise bad_request("task must be 'transcribe' or 'translate'.", param="task")
    diarize = task == "diarize" or reader.boolean("diarize") or reader.boolean("diarization")
    return TaskRequest(
        model=reader.text("model") or settings.served_model,
        task=task,
        language=language(reader.text("language")),
        prompt=reader.text("initial_prompt") or reader.text("prompt"),
        temperature=reader.number("temperature", 0.0, 0.0, 1.0),
        word_timestamps=reader.boolean("word_timestamps", True),
        dialect="whisperx",
        file_name=file_name,
        url=url,
        webhook=webhook(reader.text("webhook_url"), reader.text("webhook_headers")),
        diarize=diarize,
        num_speakers=reader.speaker_count("num_speakers"),
        min_speakers=reader.speaker_count("min_speakers"),
        max_speakers=reader.speaker_count("max_speakers"),
    )


class WhisperXController(Controller):
    """whisperX-FastAPI's routes."""

    guards = [require_api_key]  # noqa: RUF012
    tags = ["tasks (whisperX-FastAPI)"]  # noqa: RUF012

    @post("/speech-to-text", operation_id="createSpeechToTextTask", status_code=200)
    async def create_upload_task(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                                 queue: NamedDependency[TaskQueue],
                                 principal: NamedDependency[Principal]) -> dict[str, str]:
        """Queues the transcription of an uploaded file; returns its identifier."""
        return await _upload_task(request, settings, queue, principal)

    @post("/service/transcribe", operation_id="serviceTranscribe", status_code=200)
    async def service_transcribe(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                                 queue: NamedDependency[TaskQueue],
                                 principal: NamedDependency[Principal]) -> dict[str, str]:
        """The transcription step alone (same as /speech-to-text: word timings come with it)."""
        return await _upload_task(request, settings, queue, principal)

    @post("/speech-to-text-url", operation_id="createSpeechToTextUrlTask", status_code=200)
    async def create_url_task(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                              queue: NamedDependency[TaskQueue],
                              principal: NamedDependency[Principal]) -> dict[str, str]:
        """Queues the transcription of audio at a URL (http/https, public addresses only by default)."""
        reader = query_and_form(request, await body_fields(request, settings.max_upload_bytes))
        url = reader.text("url")
        if not url:
            raise bad_request("You must provide the 'url' of the audio.", param="url",
                              code="missing_required_parameter")
        await queue.check_url(url)
        task = await queue.enqueue(_task_request(settings, reader, None, url), "url", None, principal)
        return {"identifier": task.id, "message": "Task queued"}

    @get("/task/all", operation_id="listTasks")
    async def list_tasks(self, queue: NamedDependency[TaskQueue], principal: NamedDependency[Principal],
                         state: State) -> dict[str, list[dict[str, Any]]]:
        """The caller's most recent tasks (every key's for the admin), newest first, without their results."""
        tasks = await queue.recent(principal)
        return {"tasks": [task_view(task, with_result=False, owner=owner_name(state, task)) for task in tasks]}

    @get("/task/{task_id:str}", operation_id="getTask")
    async def get_task(self, task_id: FromPath[str], queue: NamedDependency[TaskQueue],
                       principal: NamedDependency[Principal], state: State) -> dict[str, Any]:
        task = await queue.find(task_id, principal)
        return task_view(task, owner=owner_name(state, task))

    @get("/task/{task_id:str}/result", operation_id="getTaskResult")
    async def get_task_result(self, task_id: FromPath[str], queue: NamedDependency[TaskQueue],
                              principal: NamedDependency[Principal], format: FromQuery[str] = "json") -> Response[Any]:
        """The result as a file: json, txt, srt or vtt."""
        task = await queue.find(task_id, principal)
        if task.result is None:
            raise bad_request(f"The task is {task.status}; it has no result.", param="task_id", code="no_result")
        return result_file(task, format)

    @delete("/task/{task_id:str}/delete", operation_id="deleteTask", status_code=200)
    async def delete_task(self, task_id: FromPath[str], queue: NamedDependency[TaskQueue],
                          principal: NamedDependency[Principal]) -> dict[str, str]:
        await queue.delete(task_id, principal)
        return {"message": "Task deleted"}

    @post("/service/align", operation_id="serviceAlign", status_code=200)
    async def service_align(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                            queue: NamedDependency[TaskQueue], principal: NamedDependency[Principal]) -> dict[str, str]:
        """Word timings for a given transcript: multipart `file` (audio) and `transcript` (JSON segments)."""
        fields, files = await read_multipart(request, settings.max_upload_bytes)
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
        reader = query_and_form(request, fields)
        task_request = TaskRequest(
            model=reader.text("model") or settings.served_model, task="align",
            language=language(reader.text("language")), word_timestamps=True, dialect="whisperx",
            file_name=upload.filename, transcript=segments,
        )
        task = await queue.enqueue(task_request, "upload", upload.data, principal)
        return {"identifier": task.id, "message": "Task queued"}

    @post("/service/diarize", operation_id="serviceDiarize", status_code=200)
    async def service_diarize(self, request: Request[Any, Any, Any], settings: NamedDependency[FrontendSettings],
                              queue: NamedDependency[TaskQueue],
                              principal: NamedDependency[Principal]) -> dict[str, str]:
        """Speaker turns only (no transcript): the result's `speakers` is `[{start, end, speaker}]`."""
        return await _upload_task(request, settings, queue, principal, task="diarize")

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


async def _upload_task(request: Request[Any, Any, Any], settings: FrontendSettings, queue: TaskQueue,
                       principal: Principal, task: str | None = None) -> dict[str, str]:
    fields, files = await read_multipart(request, settings.max_upload_bytes)
    upload = files.get("file")
    if upload is None:
        raise bad_request("You must provide a 'file' part with the audio.", param="file",
                          code="missing_required_parameter")
    if not upload.data:
        raise bad_request("The audio file is empty.", param="file", code="invalid_audio")
    task_request = _task_request(settings, query_and_form(request, fields), upload.filename, None, task)
    queued = await queue.enqueue(task_request, "upload", upload.data, principal)
    return {"identifier": queued.id, "message": "Task queued"}


def result_file(task: Task, fmt: str) -> Response[Any]:
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
