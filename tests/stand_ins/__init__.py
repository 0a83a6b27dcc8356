"""Local stand-ins for the real services, shared by tests, benchmarks and the demo.

Each runs on 127.0.0.1 only: moto for AWS, a Momento-protocol gRPC server, the polycache
extension as a process, cargo-lambda for the Lambda APIs.
"""
