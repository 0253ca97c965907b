ALTER TABLE `messages` MODIFY COLUMN `role` enum('user','assistant','system','tool') NOT NULL;--> statement-breakpoint
ALTER TABLE `sessions` ADD `message_count` int unsigned DEFAULT 0 NOT NULL;--> statement-breakpoint
-- Added by hand (drizzle-kit does not write data migrations): the count of the sessions written before this
-- migration, in one pass over the (session_id, id) index; sessions without messages keep the default 0.
UPDATE `sessions` JOIN (SELECT `session_id`, count(*) AS `n` FROM `messages` GROUP BY `session_id`) AS `counted`
ON `counted`.`session_id` = `sessions`.`id`
SET `sessions`.`message_count` = `counted`.`n`;
