-- docker-compose only: the roles and databases `deploy/local/postgres.py` creates locally.
DO $$
DECLARE name text;
BEGIN
  FOREACH name IN ARRAY ARRAY['accounts', 'deletion', 'notifier', 'analytics', 'vault'] LOOP
    EXECUTE format('CREATE ROLE %I LOGIN PASSWORD %L', name, 'development-only-secret-change-me');
  END LOOP;
END $$;
CREATE DATABASE accounts OWNER accounts;
CREATE DATABASE deletion OWNER deletion;
CREATE DATABASE notifier OWNER notifier;
CREATE DATABASE analytics OWNER analytics;
CREATE DATABASE vault OWNER vault;
