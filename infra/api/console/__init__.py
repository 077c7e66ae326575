"""The web console: its page, script and style sheet (no build step), and the routes that serve
them with the server-sent-events stream of what it shows (`routes`)."""
