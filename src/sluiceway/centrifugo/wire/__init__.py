"""Centrifugal's client protocol in Protobuf (``client.proto``) and the code ``protoc`` made from
it (``client_pb2.py``, ``client_pb2.pyi``; do not edit them).  To make them again, from ``src/``::

    pip install "grpcio-tools==1.71.*"   # protoc 29: code for protobuf >= 5.29
    python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \\
        sluiceway/centrifugo/wire/client.proto
"""
