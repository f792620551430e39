"""The TOML config (SPEC 2): one module per table, `load_config` and the types importers use.

Modules: `settings` (top-level keys, `Config`, the database-URL and listen-address rules),
`sources` (`[[sources]]`), `billing` (`[[billing]]`), `credits` (`[[credits]]`),
`notifiers` (`[[notifiers]]`, a package: one module per notifier kind), `alerts`
(`[[alerts]]`), `retention` (`[retention]`), `fields` (checks the tables share), `loading`
(file, overrides, `parse_config`). May import: the standard library, `etl.vendors`, `etl.errors`,
`etl.secrets`, `etl.redact`; never `etl.alerts`, the store, HTTP, pandas or click.
"""

from etl.config.alerts import AlertRule, Condition
from etl.config.billing import Aggregation, BillingRule, Pricing, Tier
from etl.config.credits import Credit
from etl.config.loading import load_config, parse_config
from etl.config.notifiers import (
    NOTIFIER_TYPES,
    EmailNotifier,
    MailServer,
    MailTls,
    Notifier,
    NotifierType,
    SecretRef,
    Transports,
    WebhookNotifier,
    webhook_url,
)
from etl.config.retention import Retention
from etl.config.settings import (
    Config,
    database_url_problem,
    listen_address_problem,
    normalize_url,
    split_listen_address,
)
from etl.config.sources import SourceConfig

__all__ = [
    "NOTIFIER_TYPES", "Aggregation", "AlertRule", "BillingRule", "Condition", "Config",
    "Credit", "EmailNotifier", "MailServer", "MailTls", "Notifier", "NotifierType", "Pricing",
    "Retention", "SecretRef", "SourceConfig", "Tier", "Transports", "WebhookNotifier",
    "database_url_problem", "listen_address_problem", "load_config",
    "normalize_url", "parse_config", "split_listen_address", "webhook_url",
]
