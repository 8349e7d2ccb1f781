"""AWS Lambda entry point behind API Gateway (REST proxy or HTTP API): `handler`.

The app itself is built on the first invocation (cold start) from the function's environment,
with its boto3 clients kept for the life of the container.
"""

from mangum import Mangum

from appdata.api.app import app

handler = Mangum(app, lifespan="off")
