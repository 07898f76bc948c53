"""Open Inference Protocol v2 gRPC messages and service stubs, generated from `inference.proto`.

`inference_pb2` (messages) and `inference_pb2_grpc` (`GRPCInferenceServiceStub` for clients) are made
by `python tools/gen_oip_grpc.py`; tests/unit/test_oip_grpc_stubs.py fails when they are stale. The
messages are registered as `inference.*` in protobuf's default pool, as tritonclient's and MLServer's
own copies are: import only one of them into a process.
"""
