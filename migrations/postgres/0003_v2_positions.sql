CREATE TABLE "idempotency_keys" (
	"session_id" uuid NOT NULL,
	"key" text NOT NULL,
	"fingerprint" text NOT NULL,
	"seq" integer NOT NULL,
	"length" integer NOT NULL,
	"popped_role" text,
	"popped_content" text,
	"popped_at" timestamp(3) with time zone,
	CONSTRAINT "idempotency_keys_pkey" PRIMARY KEY("session_id","key")
);
--> statement-breakpoint
DROP INDEX "messages_session_idx";--> statement-breakpoint
-- Edited by hand (drizzle-kit does not write data migrations): the column is added without NOT NULL, filled in
-- with each session's messages numbered from 0 in append (id) order, which is what message_count counts, and only
-- then made NOT NULL; the unique (session_id, position) index is built at the end, on the filled column.
ALTER TABLE "messages" ADD COLUMN "position" integer;--> statement-breakpoint
UPDATE "messages" SET "position" = "numbered"."position"
FROM (SELECT "id", (row_number() OVER (PARTITION BY "session_id" ORDER BY "id") - 1)::integer AS "position" FROM "messages") AS "numbered"
WHERE "messages"."id" = "numbered"."id";--> statement-breakpoint
ALTER TABLE "messages" ALTER COLUMN "position" SET NOT NULL;--> statement-breakpoint
ALTER TABLE "sessions" ADD COLUMN "key_seq" integer DEFAULT 0 NOT NULL;--> statement-breakpoint
ALTER TABLE "idempotency_keys" ADD CONSTRAINT "idempotency_keys_session_id_sessions_id_fk" FOREIGN KEY ("session_id") REFERENCES "public"."sessions"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "idempotency_keys_session_seq_idx" ON "idempotency_keys" USING btree ("session_id","seq");--> statement-breakpoint
CREATE UNIQUE INDEX "messages_session_idx" ON "messages" USING btree ("session_id","position");