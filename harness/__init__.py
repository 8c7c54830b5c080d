"""What the tests and the benchmarks share: our stack on free ports (`stack`), test audio and speech corpora
(`assets`, `speech`, `nonspeech`, `meetings`), text normalisation and WER (`text`), clients that misbehave
(`clients`), gRPC calls to the Triton models (`grpc_calls`), /proc readings of served processes (`procfs`),
a PostgreSQL server (`postgres`), readers of the deployment files and their linters (`deployment`), and the small
fakes of the unit tests (`toy_whisper`, `trtllm_reference`).

Not part of the installed distribution: the tests and `python -m bench.…` import it from the repository root."""
