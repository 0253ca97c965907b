ALTER TABLE "messages" DROP CONSTRAINT "messages_role_check";--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "message_count" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "messages" ADD CONSTRAINT "messages_role_check" CHECK ("messages"."role" in ('user', 'assistant', 'system', 'tool'));--> statement-breakpoint
-- Added by hand (drizzle-kit does not write data migrations): the count of the sessions written before this
-- migration, in one pass over messages; sessions without messages keep the default 0.
UPDATE "sessions" SET "message_count" = "counted"."n"
FROM (SELECT "session_id", count(*)::integer AS "n" FROM "messages" GROUP BY "session_id") AS "counted"
WHERE "sessions"."id" = "counted"."session_id";
