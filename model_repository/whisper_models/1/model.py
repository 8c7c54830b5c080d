"""Triton glue of the model-management model: one action per request on the catalogue
(`whisper_triton.catalogue`, whose state is on disk), engines loaded and unloaded through Triton's model
control (the server runs in explicit mode), engines of fetched models written into the served repository.

Its instances are processes (config.pbtxt), so that a list or a transcription's check of a fetched model does
not wait behind another's load: the catalogue's state and locks are on disk, and every change to the served
repository is made under its lock (`repository_lock`)."""

import json
import shutil
import traceback
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

from whisper_triton import models_contract as mc
from whisper_triton.catalogue import Catalogue
from whisper_triton.errors import ConflictError, InvalidRequestError, ServiceError
from whisper_triton.log_files import trace_fatal_signals, untrace_fatal_signals
from whisper_triton.repository import engine_model_name, model_specs, repository_lock, sync_engines, write_engine
from whisper_triton.settings import model_settings


class TritonPythonModel:
    def initialize(self, args):
        trace_fatal_signals()
        config = json.loads(args["model_config"])
        parameters = {key: value.get("string_value", "") for key, value in config.get("parameters", {}).items()}
        self.repository = Path(parameters["REPOSITORY"])
        self.source = Path(parameters["SOURCE"])
        settings = model_settings()
        source_dir = Path(settings.model_source_dir).expanduser() if settings.model_source_dir else None
        self.catalogue = Catalogue(settings.cache_path(), model_specs(), source_dir,
                                   root=settings.managed_path())
        self.logger = pb_utils.Logger
        self._sync()  # after a restart: engines of the models fetched before it

    def _sync(self):
        with repository_lock(self.repository):  # fetched() read under the lock: no other instance's engine is lost
            sync_engines(self.source, self.repository, self.catalogue.fetched(), list(self.catalogue.configured))

    def _loaded(self, model):
        try:
            return bool(pb_utils.is_model_ready(engine_model_name(model)))
        except Exception:  # not in the repository (yet): not loaded
            return False

    def _record(self, model):
        record = self.catalogue.record(model)
        loaded = record.state == "available" and self._loaded(model)
        return self.catalogue.record(model, loaded) if loaded else record

    def _act(self, action, model):
        self._sync()  # fetched here or by another server sharing the cache: its engine is in the repository
        if action == "list":
            return [self._record(m) for m in self.catalogue.ids()]
        if action not in mc.ACTIONS:
            raise InvalidRequestError(f"Unknown ACTION '{action[:40]}': use one of {', '.join(mc.ACTIONS)}.",
                                      param="action")
        record = self._record(model)
        if action == "fetch":
            self.logger.log_info(f"whisper_models: fetching model '{model}'")
            self.catalogue.fetch(model)
            return self._record(model)
        if action == "load":
            if record.state not in ("available", "loaded"):
                raise ConflictError(f"The model '{model}' is {record.state.replace('_', ' ')}: fetch it first.",
                                    param="model")
            if record.state == "available":
                if not record.configured:
                    with repository_lock(self.repository):
                        write_engine(self.source, self.repository, model, self.catalogue.spec(model))
                pb_utils.load_model(model_name=engine_model_name(model))
            return self._record(model)
        if action == "unload":
            if record.default:
                raise ConflictError(f"The model '{model}' is the default model: it stays loaded.", param="model")
            if record.state == "loaded":
                pb_utils.unload_model(model_name=engine_model_name(model))
            return self._record(model)
        if action == "delete":
            with repository_lock(self.repository):
                self.catalogue.delete(model, loaded=record.state == "loaded")
                shutil.rmtree(self.repository / engine_model_name(model), ignore_errors=True)
            return {"id": model, "deleted": True}
        return record

    def finalize(self):
        untrace_fatal_signals()

    def execute(self, requests):
        responses = []
        for request in requests:
            action = _text(request, mc.ACTION)
            model = _text(request, mc.MODEL)
            try:
                result = mc.encode_result(self._act(action, model))
                out = pb_utils.Tensor(mc.RESULT, np.array([result], dtype=object))
                responses.append(pb_utils.InferenceResponse(output_tensors=[out]))
            except ServiceError as exc:
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(exc.to_wire())))
            except Exception as exc:
                self.logger.log_error(f"whisper_models {action} '{model}': {traceback.format_exc()}")
                wire = ServiceError(f"{action} of '{model}' failed: {exc}").to_wire()
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(wire)))
        return responses


def _text(request, name):
    tensor = pb_utils.get_input_tensor_by_name(request, name)
    if tensor is None:
        return ""
    value = tensor.as_numpy().reshape(-1)
    return value[0].decode("utf-8", errors="replace").strip() if len(value) else ""
