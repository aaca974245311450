-- Projects, users, their roles in projects, and API keys. Project names are the
-- `project` of every other service's rows; projects are never deleted.

CREATE TABLE projects (
    name text PRIMARY KEY,
    description text NOT NULL DEFAULT '',
    create_time timestamptz NOT NULL DEFAULT now()
);

INSERT INTO projects (name, description) VALUES ('default', 'The project of calls that name none');

-- A user exists once a key or a role names them; global admins manage projects.
CREATE TABLE users (
    user_id text PRIMARY KEY,
    global_admin boolean NOT NULL DEFAULT false,
    create_time timestamptz NOT NULL DEFAULT now()
);

-- Role numbers are those of cairn.auth.v1.ProjectRole: 1 viewer, 2 editor, 3 admin.
CREATE TABLE project_roles (
    project text NOT NULL REFERENCES projects,
    user_id text NOT NULL REFERENCES users,
    role smallint NOT NULL CHECK (role BETWEEN 1 AND 3),
    PRIMARY KEY (project, user_id)
);

CREATE INDEX project_roles_by_user ON project_roles (user_id);

-- Only the SHA-256 of a key is stored; the prefix, public, finds its row.
CREATE TABLE api_keys (
    prefix text PRIMARY KEY,
    key_hash bytea NOT NULL,
    user_id text NOT NULL REFERENCES users,
    name text NOT NULL,
    create_time timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz,
    revoke_time timestamptz
);

CREATE INDEX api_keys_by_user ON api_keys (user_id);
