"""The MMS handler service: adapts MMS's (data, context) calls to the request workflow.

MMS imports this module in each worker and calls :func:`handle` once with
``data=None`` when the model loads, then once per batch of requests.
"""

from __future__ import annotations

import logging
from http import HTTPStatus
from pathlib import Path

from dogbreed.serving.inference import intra_op_threads
from dogbreed.serving.workflow import VARIANT_HEADER, SharedWorkflow, Workflow, control_token

log = logging.getLogger(__name__)


def request_headers(merged) -> dict[str, str]:
    """The request's HTTP headers only.

    MMS merges the query parameters into the header dict it hands over, with
    dicts as values, where a real header has a string; a header sent with
    the request wins over a parameter of the same name. So the strings are
    the headers, and ``?accept=...`` or ``?x-amzn-sagemaker-target-model=...``
    is never taken for one.
    """
    return {name: value for name, value in (merged or {}).items() if isinstance(name, str) and isinstance(value, str)}


class HandlerService:
    def __init__(self):
        self.workflow: Workflow | SharedWorkflow | None = None

    def initialize(self, context) -> Workflow | SharedWorkflow:
        model_dir = Path(context.system_properties["model_dir"])
        token = control_token()
        if token is not None:
            self.workflow, mode = SharedWorkflow(model_dir, token), "multi-model"
        else:
            self.workflow = Workflow(model_dir)
            mode = "artifact" if self.workflow.direct else "routing"
        log.info("serving %s (%s mode), %s ONNX Runtime threads", model_dir, mode, intra_op_threads() or "default")
        return self.workflow

    def handle(self, data, context):
        workflow = self.workflow or self.initialize(context)
        if data is None:
            return None
        answers = []
        for idx, request in enumerate(data):
            headers = request_headers(context.get_all_request_header(idx))
            body = request.get("body") if request.get("body") is not None else request.get("data")
            response = workflow.handle(headers, body)
            if response.status != 200:
                context.set_response_status(code=response.status, phrase=HTTPStatus(response.status).phrase, idx=idx)
            context.set_response_content_type(idx, response.content_type)
            if response.variant:
                context.set_response_header(idx, VARIANT_HEADER, response.variant)
            answers.append(response.body)
        return answers


_service = HandlerService()


def handle(data, context):
    return _service.handle(data, context)
