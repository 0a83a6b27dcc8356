"""Loaders: where a value comes from on a miss.

Built in, by key scheme (each needs `pip install 'polycache[aws]'`, botocore; imported on first
use):

| key | loader |
|---|---|
| `ssm:/name` | `polycache.loaders.ssm.SsmLoader` |
| `secretsmanager:name` | `polycache.loaders.secretsmanager.SecretsManagerLoader` |
| `s3://bucket/key` | `polycache.loaders.s3.S3Loader` |
| `dynamodb://table?attr=value` | `polycache.loaders.dynamodb.DynamoDbLoader` |
| `appconfig:application/environment/profile` | `polycache.loaders.appconfig.AppConfigLoader` |

Any `async def load(name) -> value` is a loader too: see `Cache.register_loader`.
"""

from polycache.loaders._aws import close_clients, use_session

__all__ = ["close_clients", "use_session"]
