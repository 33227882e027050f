#!/usr/bin/env python3
"""Prints N distinct free TCP ports on 127.0.0.1, space-separated.

Every socket stays bound until all N are chosen, so no port repeats.
Usage: free_ports.py N
"""
import socket
import sys

count = int(sys.argv[1])
sockets = []
for _ in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    sockets.append(s)
print(" ".join(str(s.getsockname()[1]) for s in sockets))
