"""dbmaint: what the manager, the worker and the client CLI share.

The two services never import each other; they meet here: the generated gRPC code (``dbmaint.v1``), the
operation names and job types (``dbmaint.operations``), and the wire conversions (``dbmaint.wire``).
"""

__version__ = "0.1.0"
