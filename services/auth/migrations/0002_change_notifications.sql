-- Servers cache key checks for a moment; every committed change to who may do what
-- tells them to forget (LISTEN cairn_auth_changed), whoever made it: a server, the
-- command line, or SQL typed by hand.

CREATE FUNCTION notify_auth_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cairn_auth_changed', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON api_keys
    FOR EACH STATEMENT EXECUTE FUNCTION notify_auth_changed();
CREATE TRIGGER project_roles_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON project_roles
    FOR EACH STATEMENT EXECUTE FUNCTION notify_auth_changed();
CREATE TRIGGER users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION notify_auth_changed();
CREATE TRIGGER projects_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON projects
    FOR EACH STATEMENT EXECUTE FUNCTION notify_auth_changed();
